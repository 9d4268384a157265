"""The driver step: shards → matrix → scale → cluster → project → clusters, metrics, report.

``analyze(out, cfg)`` runs on the driver after the Ray pipeline (or alone, ``soundclust analyze``).
It reads OUT/manifest.parquet and the shards, and writes:

- OUT/clusters.parquet  track_id, manifest metadata, kmeans, hdbscan, umap_x/y, pca_x/y
- OUT/oof.parquet       out-of-fold k-means distances and labels (seed 004)
- OUT/metrics.json      counts, k, quality scores, sizes, label agreement, seconds per step
- OUT/cluster_summaries.json and OUT/report.html
- OUT/fitted/placement.*  what was fitted, to place tracks added later (analysis/placement.py)

``analyze`` is a sequence of named steps (gather → PCA → k → k-means → OOF → neighbour space →
HDBSCAN → UMAP → PCA map → metrics → summaries → write); each step is a function of the matrix
and the config that returns its result and what it records. A step that cannot run on the data
(too few tracks for UMAP, one cluster for a silhouette) records None and a reason instead of
failing the run. Chunk-level shards (one row per window) are clustered per window and each
track takes its windows' majority label.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from soundclust_ray import outdir
from soundclust_ray.analysis import clustering, gather, metrics, projection, summaries
from soundclust_ray.analysis.executor import SERIAL, Executor
from soundclust_ray.analysis.matrix import NoRows, gather_matrix
from soundclust_ray.analysis.oof import OofParams, dist_columns, fit_oof_kmeans
from soundclust_ray.analysis.steps import Step, pca_step
from soundclust_ray.config import PLAIN_PROGRESS_EVERY_S, AnalysisConfig, PlacementConfig, to_dict
from soundclust_ray.progress import eta_text

STEP_COUNT = 14
"""Steps the progress bar counts: the thirteen timed steps and the final write."""
LAYOUT_COLUMNS = ("kmeans", "hdbscan", "umap_x", "umap_y", "pca_x", "pca_y", "top_tags", "placed")
"""Columns of clusters.parquet that are results, not manifest metadata."""


class _Steps:
    """Times named steps and shows the user where the analysis is.

    On a terminal: one tqdm bar over the steps. Elsewhere (CI, ``ray job logs``, a file) a
    redrawn bar is a stream of carriage returns, so a plain line names each step that starts
    once the analysis has run ``PLAIN_PROGRESS_EVERY_S``: a 300-track analysis prints nothing,
    a million-track one says which step its minutes go to (as progress.py does for products).
    """

    def __init__(self, total: int, progress: bool):
        from tqdm.auto import tqdm

        self.seconds: dict[str, float] = {}
        self.peak_rss_gib: dict[str, float] = {}
        self.plain = progress and not sys.stdout.isatty()
        self.started = time.perf_counter()
        self.done = 0
        """Steps finished (a disabled tqdm bar, the plain mode's, does not count them)."""
        self.bar = tqdm(  # stdout: a run's stderr goes to OUT/logs while Ray is up (ray_env)
            total=total,
            desc="analysis",
            disable=not progress or self.plain,
            unit="step",
            file=sys.stdout,
        )

    def announce(self, name: str) -> None:
        """Name the step about to run: in the bar, or as a line when the analysis is long."""
        self.bar.set_description(f"analysis: {name}")
        elapsed = time.perf_counter() - self.started
        if self.plain and elapsed >= PLAIN_PROGRESS_EVERY_S:
            step = f"step {self.done + 1}/{self.bar.total}"
            print(f"analysis: {name} ({step}, {eta_text(elapsed)} so far)", flush=True)

    @contextmanager
    def __call__(self, name: str):
        self.announce(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - t0, 4)
            self.peak_rss_gib[name] = _peak_rss_gib()
            self.done += 1
            self.bar.update(1)

    def close(self) -> None:
        """End at 100 %: the bar counts the steps this analysis ran, however many it skipped."""
        self.bar.set_description("analysis")
        self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()


def preload_libraries() -> None:
    """Import the libraries the analysis calls into (sklearn with this module, hdbscan, umap
    with numba's cache: 1.8 s on the 2-core machine), so that a run can load them on the
    driver while its tracks compute."""
    import hdbscan  # noqa: F401

    projection.load_umap()


def _peak_rss_gib() -> float | None:
    """This process's peak resident memory so far (Linux/macOS), to check the memory bound."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    scale = 1 if sys.platform == "darwin" else 1024
    return round(peak * scale / 2**30, 3)


@dataclass
class Fitted:
    """Row-level results of the fitting steps (rows are windows for chunk-level shards)."""

    g: gather.Gathered
    X: np.ndarray
    kmeans: np.ndarray
    centres: np.ndarray
    hdbscan: np.ndarray
    umap_xy: np.ndarray
    pca_xy: np.ndarray
    wrote_oof: bool
    steps: list[Step]
    """Raw rows → ``X`` (scaling, fusion, PCA reduction), for the placement model."""
    pca_map: Step | None
    neighbour_steps: list[Step]
    """``X`` → the neighbour space HDBSCAN and UMAP saw (its PCA, or none)."""
    hdbscan_tree: clustering.HdbscanTree | None


@dataclass
class TrackView:
    """The results per track: window rows voted (labels) or averaged (maps, tags)."""

    track_ids: np.ndarray
    kmeans: np.ndarray
    hdbscan: np.ndarray
    umap_xy: np.ndarray
    pca_xy: np.ndarray
    tags: pd.DataFrame | None


# --- steps on the matrix ----------------------------------------------------------------------


def reduce_step(X: np.ndarray, cfg: AnalysisConfig) -> tuple[np.ndarray, dict | None, list[Step]]:
    """Optional PCA before clustering (``cfg.pca``); (X, None, []) when it is off or X too
    small; else the reduced X, its record and its placement step."""
    if cfg.pca is None or X.shape[0] < 2:
        return X, None, []
    Y, info, pca = projection.fit_pca_reduction_model(X, cfg.pca, cfg)
    return Y, info, [pca_step(pca.mean_, pca.components_)]


def choose_k(
    X: np.ndarray, cfg: AnalysisConfig, executor: Executor = SERIAL
) -> tuple[int, dict | None, str | None]:
    """(k, k-selection record or None, clamp note or None) for the rows of X.

    ``cfg.k="auto"`` picks by silhouette (falling back to the range's start with a reason);
    k is clamped to rows - 1 so every cluster can hold a row.
    """
    k_req, selection = cfg.k, None
    if isinstance(k_req, str):
        if k_req != "auto":
            raise ValueError(f"k must be an integer or 'auto', got '{k_req}'")
        try:
            k_best, curve = clustering.select_k(X, cfg, executor)
            selection = {"range": list(cfg.k_auto_range), "curve": curve, "best": k_best}
            k_req = k_best
        except ValueError as exc:
            selection = {"skipped": str(exc)}
            k_req = cfg.k_auto_range[0]
    n_rows = X.shape[0]
    k, k_max = int(k_req), max(1, n_rows - 1)
    if k > k_max:
        return k_max, selection, f"k={k} clamped to {k_max} for {n_rows} rows"
    return k, selection, None


def oof_table(g: gather.Gathered, dist: np.ndarray, labels: np.ndarray) -> pa.Table:
    """OUT/oof.parquet's table: track_id [, window_index], dist_00…, label."""
    cols: dict[str, pa.Array] = {"track_id": pa.array(g.track_ids.astype(str), pa.string())}
    if g.window_index is not None:
        cols["window_index"] = pa.array(g.window_index, pa.int32())
    for j, name in enumerate(dist_columns(dist.shape[1])):
        cols[name] = pa.array(dist[:, j], pa.float32())
    cols["label"] = pa.array(labels, pa.int32())
    return pa.table(cols)


def oof_step(
    out: str,
    g: gather.Gathered,
    X: np.ndarray,
    k: int,
    cfg: AnalysisConfig,
    executor: Executor = SERIAL,
) -> dict:
    """Seed 004's out-of-fold MiniBatchKMeans → OUT/oof.parquet; its record, or a reason."""
    try:
        dist, labels = fit_oof_kmeans(X, OofParams.for_analysis(cfg, k), executor)
    except ValueError as exc:
        return {"skipped": str(exc)}
    outdir.write_table(out, outdir.OOF, oof_table(g, dist, labels))
    return {"path": outdir.OOF, "k": k, "splits": cfg.oof_splits}


def neighbour_space(
    X: np.ndarray, cfg: AnalysisConfig
) -> tuple[np.ndarray, dict | None, list[Step]]:
    """The matrix HDBSCAN and UMAP search neighbours in: a PCA of X when X is big and wide;
    with its record and placement step (none when Xn is X)."""
    wide = X.shape[1] > cfg.neighbors_pca_dims
    if (cfg.hdbscan or cfg.umap) and X.shape[0] > cfg.neighbors_pca_above and wide:
        Y, info, pca = projection.fit_pca_reduction_model(X, cfg.neighbors_pca_dims, cfg)
        return Y, info, [pca_step(pca.mean_, pca.components_)]
    return X, None, []


def hdbscan_step(
    Xn: np.ndarray, cfg: AnalysisConfig, progress: bool, executor: Executor = SERIAL
) -> tuple[np.ndarray, dict, clustering.HdbscanTree | None]:
    """HDBSCAN labels, record and fitted tree; all noise (-1) and no tree when turned off."""
    if not cfg.hdbscan:
        off = {"skipped": "turned off (hdbscan=False)"}
        return np.full(Xn.shape[0], -1, dtype=np.int32), off, None
    return clustering.fit_hdbscan_tree(Xn, cfg, progress, executor)


def umap_step(Xn: np.ndarray, cfg: AnalysisConfig, progress: bool) -> tuple[np.ndarray, dict]:
    """The UMAP map and record; NaN coordinates and a reason when off or impossible."""
    try:
        if not cfg.umap:
            raise ValueError("turned off (umap=False)")
        return projection.fit_umap_2d(Xn, cfg, progress)
    except ValueError as exc:
        return np.full((Xn.shape[0], 2), np.nan, dtype=np.float32), {"skipped": str(exc)}


def pca_map_step(X: np.ndarray, cfg: AnalysisConfig) -> tuple[np.ndarray, dict, Step | None]:
    """The 2-D PCA map, record and axes; NaN coordinates, a reason and None when X is too
    small."""
    try:
        Y, info, pca = projection.fit_pca_2d_model(X, cfg)
        return Y, info, pca_step(pca.mean_, pca.components_)
    except ValueError as exc:
        return np.full((X.shape[0], 2), np.nan, dtype=np.float32), {"skipped": str(exc)}, None


def _fit(
    out: str,
    cfg: AnalysisConfig,
    steps: _Steps,
    result: dict,
    notes: list[str],
    executor: Executor,
) -> Fitted:
    """The fitting steps in order, each timed; their records go into ``result``.

    The steps' own loops draw no bar: one analysis bar names the step it is in, and a bar
    nested under it leaves residue lines on terminals and in logs.
    """
    with steps("gather"):
        g, matrix_info = gather_matrix(out, cfg, progress=False)
    result["_matrix_gib"] = round(g.X.nbytes / 2**30, 3)
    if g.X.shape[0] == 0:
        raise NoRows("the shards hold no rows")
    result["matrix"] = {k: v for k, v in matrix_info.items() if k != "embedding_sanity"}
    if "embedding_sanity" in matrix_info:
        result["embedding_sanity"] = matrix_info["embedding_sanity"]
    with steps("pca"):
        X, pca_info, reduce = reduce_step(g.X, cfg)
    if pca_info is not None:
        result["pca"] = pca_info
    result["n_tracks"] = len(np.unique(g.track_ids.astype(str))) if g.chunk_level else len(X)
    if g.chunk_level:
        result["n_windows"] = int(X.shape[0])
    with steps("k selection"):
        k, selection, note = choose_k(X, cfg, executor)
    if selection is not None:
        result["k_selection"] = selection
    notes.extend([note] if note else [])
    result["k"] = k
    with steps("kmeans"):
        km_labels, centres = clustering.fit_kmeans(X, k, cfg)
    with steps("oof kmeans"):
        if cfg.oof:
            result["oof"] = oof_step(out, g, X, k, cfg, executor)
    with steps("neighbour pca"):
        Xn, neighbours_info, to_neighbours = neighbour_space(X, cfg)
    if neighbours_info is not None:
        result["neighbors_pca"] = neighbours_info
    with steps("hdbscan"):
        hdb_labels, result["hdbscan"], tree = hdbscan_step(Xn, cfg, False, executor)
    with steps("umap"):
        umap_xy, result["umap"] = umap_step(Xn, cfg, False)
    del Xn
    with steps("pca map"):
        pca_xy, result["pca_map"], pca_map = pca_map_step(X, cfg)
    wrote_oof = "path" in result.get("oof", {})
    fitted = Fitted(
        g,
        X,
        km_labels,
        centres,
        hdb_labels,
        umap_xy,
        pca_xy,
        wrote_oof,
        g.steps + reduce,
        pca_map,
        to_neighbours,
        tree,
    )
    with steps("placement model"):
        result["placement_model"] = placement_step(out, fitted, cfg, result)
    return fitted


def placement_step(out: str, f: Fitted, cfg: AnalysisConfig, result: dict) -> dict:
    """OUT/fitted/placement.*: the steps, centres, PCA map axes and a training-map sample,
    keyed by this analysis's config and matrix, so ``soundclust place`` can add tracks later."""
    from soundclust_ray.analysis import placement

    pcfg = PlacementConfig()
    model = placement.fit_placement(
        f.steps,
        f.X,
        f.centres,
        f.hdbscan,
        f.umap_xy,
        f.pca_map,
        pcfg,
        cfg.random_state,
        f.g.columns,
        neighbour_steps=f.neighbour_steps,
        hdbscan_tree=f.hdbscan_tree,
    )
    model.key = placement.analysis_key(to_dict(cfg), result["matrix"])
    model.window_level = f.g.chunk_level
    placement.save_placement(out, model, f.g.track_ids)
    return {"path": outdir.fitted_file(placement.META), "map_rows": len(model.train_X)}


# --- from rows to tracks, metrics, summaries ----------------------------------------------------


def _mean_per_track(track_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean of window-level rows per track (coordinates), tracks sorted."""
    ids, inverse = np.unique(track_ids.astype(str), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    acc = np.zeros((len(ids), values.shape[1]), dtype=np.float64)
    np.add.at(acc, inverse, values)
    return (acc / counts[:, None]).astype(np.float32)


def per_track(f: Fitted) -> TrackView:
    """Row results as track results: unchanged for track-level rows, voted/averaged windows."""
    g = f.g
    if not g.chunk_level:
        return TrackView(g.track_ids, f.kmeans, f.hdbscan, f.umap_xy, f.pca_xy, g.tags)
    ids, km_track = clustering.vote_windows(g.track_ids, f.kmeans)
    _, hdb_track = clustering.vote_windows(g.track_ids, f.hdbscan)
    tags = None
    if g.tags is not None:
        inverse = np.unique(g.track_ids.astype(str), return_inverse=True)[1]
        tags = g.tags.groupby(inverse).mean().reset_index(drop=True)
    umap_track = _mean_per_track(g.track_ids, f.umap_xy)
    pca_track = _mean_per_track(g.track_ids, f.pca_xy)
    return TrackView(ids, km_track, hdb_track, umap_track, pca_track, tags)


def internal_scores(f: Fitted, cfg: AnalysisConfig) -> dict:
    """Silhouette, Davies–Bouldin, Calinski–Harabasz of both labellings (on the rows)."""
    km_m = metrics.internal_metrics(f.X, f.kmeans, cfg)
    hdb_m = metrics.internal_metrics(f.X, f.hdbscan, cfg, ignore_noise=True)
    if f.g.chunk_level:
        km_m["level"] = hdb_m["level"] = "window"
    return {
        "silhouette": km_m["silhouette"],
        "davies_bouldin": km_m["davies_bouldin"],
        "calinski_harabasz": km_m["calinski_harabasz"],
        "kmeans_metrics": km_m,
        "hdbscan_metrics": hdb_m,
    }


def track_counts(t: TrackView) -> dict:
    """Cluster sizes, HDBSCAN cluster count and noise fraction, over tracks."""
    hdb = t.hdbscan
    return {
        "cluster_sizes": {
            "kmeans": metrics.cluster_sizes(t.kmeans),
            "hdbscan": metrics.cluster_sizes(hdb),
        },
        "n_hdbscan_clusters": int(len(np.unique(hdb[hdb >= 0]))),
        "noise_fraction": float(np.mean(hdb < 0)) if len(hdb) else None,
    }


def _top_tags_text(tags: pd.DataFrame, n: int) -> list[str]:
    vals = tags.to_numpy(dtype=np.float32)
    names = np.array(tags.columns)
    out = []
    for row in vals:
        ok = np.isfinite(row)
        if not ok.any():
            out.append("")
            continue
        r = np.where(ok, row, -np.inf)
        top = np.argsort(-r, kind="stable")[:n]
        out.append(", ".join(f"{names[i]} ({row[i]:.2f})" for i in top if np.isfinite(row[i])))
    return out


def clusters_table(t: TrackView, manifest: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    """OUT/clusters.parquet's frame: track_id, manifest metadata, labels, maps [, top_tags]."""
    clusters = pd.DataFrame({"track_id": np.asarray(t.track_ids).astype(str)})
    clusters = clusters.merge(manifest, on="track_id", how="left")
    clusters["kmeans"] = np.asarray(t.kmeans, dtype=np.int32)
    clusters["hdbscan"] = np.asarray(t.hdbscan, dtype=np.int32)
    clusters["umap_x"], clusters["umap_y"] = t.umap_xy[:, 0], t.umap_xy[:, 1]
    clusters["pca_x"], clusters["pca_y"] = t.pca_xy[:, 0], t.pca_xy[:, 1]
    if t.tags is not None:
        clusters["top_tags"] = _top_tags_text(t.tags, cfg.summary_top_values)
    return clusters


def label_scores(labels: pd.Series, t: TrackView) -> dict:
    """Agreement of both labellings with known labels; the k-means numbers also at top level."""
    lab = {
        "kmeans": metrics.label_metrics(labels, t.kmeans),
        "hdbscan": metrics.label_metrics(labels, t.hdbscan),
    }
    keys = ("nmi", "ari", "homogeneity", "completeness", "contingency")
    return {"label_metrics": lab, **{key: lab["kmeans"].get(key) for key in keys}}


def summaries_step(
    f: Fitted, t: TrackView, clusters: pd.DataFrame, cfg: AnalysisConfig
) -> dict[str, list]:
    """Per-cluster summaries of both labellings, over track-level rows (windows pooled);
    HDBSCAN's noise rows apart, under ``hdbscan_noise`` (None when every row is in a cluster)."""
    meta = clusters.drop(columns=list(LAYOUT_COLUMNS), errors="ignore")
    Xs, km_centres = f.X, {i: c for i, c in enumerate(f.centres)}
    if f.g.chunk_level:
        g = f.g
        Xs = gather.pool_windows(gather.Gathered(g.track_ids, f.X, g.columns, g.window_index)).X
        km_centres = None
    n, top = cfg.summary_nearest, cfg.summary_top_values
    hdbscan, noise = summaries.split_noise(
        summaries.summarize_clusters(Xs, t.hdbscan, meta, None, t.tags, n, top)
    )
    return {
        "kmeans": summaries.summarize_clusters(Xs, t.kmeans, meta, km_centres, t.tags, n, top),
        "hdbscan": hdbscan,
        "hdbscan_noise": noise,
    }


def _describe(
    out: str,
    f: Fitted,
    manifest: pd.DataFrame,
    label_col: str | None,
    cfg: AnalysisConfig,
    steps: _Steps,
    result: dict,
) -> tuple[pd.DataFrame, dict]:
    """The metrics and summaries steps: (clusters frame, summaries); records into ``result``."""
    with steps("metrics"):
        result.update(internal_scores(f, cfg))
        tracks = per_track(f)
        result.update(track_counts(tracks))
        clusters = clusters_table(tracks, manifest, cfg)
        if label_col is not None:
            result.update(label_scores(clusters[label_col], tracks))
    with steps("summaries"):
        cluster_summaries = summaries_step(f, tracks, clusters, cfg)
        _write_json(out, outdir.SUMMARIES, cluster_summaries)
    return clusters, cluster_summaries


def duplicates_step(out: str, cfg: AnalysisConfig, result: dict) -> dict:
    """OUT/duplicates.parquet in the search geometry; builds the index ``similar`` reuses."""
    if not cfg.duplicates:
        return {"skipped": "turned off (duplicates=False)"}
    from soundclust_ray.analysis.duplicates import write_duplicates

    return write_duplicates(out, cfg, result.get("matrix", {}))


# --- the sequence and the outputs ---------------------------------------------------------------


def check_label_column(manifest: pd.DataFrame, label_col: str | None) -> None:
    """ValueError naming the manifest's metadata columns when ``label_col`` is not one."""
    if label_col is None or label_col in manifest.columns:
        return
    meta_cols = [c for c in manifest.columns if c not in ("track_id", "path")]
    raise ValueError(
        f"label column '{label_col}' is not in the manifest; its metadata columns are: "
        + (", ".join(meta_cols) if meta_cols else "(none)")
    )


def _empty_clusters(manifest: pd.DataFrame) -> pd.DataFrame:
    df = manifest.iloc[:0].copy()
    for col, dtype in (("kmeans", "int32"), ("hdbscan", "int32")):
        df[col] = pd.Series(dtype=dtype)
    for col in ("umap_x", "umap_y", "pca_x", "pca_y"):
        df[col] = pd.Series(dtype="float32")
    return df


def analyze(
    out: str,
    cfg: AnalysisConfig | None = None,
    label_col: str | None = None,
    progress: bool = True,
    executor: Executor = SERIAL,
) -> dict:
    """Run the driver analysis on OUT and write its outputs; returns the metrics dict.

    ``executor`` runs the independent jobs (k-selection fits, OOF folds, out-of-sample HDBSCAN
    batches): serial here, or ``ray_executor.RayExecutor`` when the caller has Ray up.

    Raises ValueError for user errors (unknown matrix, label column missing from the manifest,
    no shards); everything the data cannot support is recorded in the metrics instead.
    """
    cfg = cfg or AnalysisConfig()
    t_start = time.perf_counter()
    manifest = gather.read_manifest(out)
    check_label_column(manifest, label_col)
    steps = _Steps(total=STEP_COUNT, progress=progress)
    notes: list[str] = []
    result: dict = {"out": out, "label_col": label_col, "config": to_dict(cfg)}
    try:
        fitted = _fit(out, cfg, steps, result, notes, executor)
        clusters, cluster_summaries = _describe(
            out, fitted, manifest, label_col, cfg, steps, result
        )
        wrote_oof = fitted.wrote_oof
        del fitted  # the index gathers its own matrix: two copies raised the 1M peak by 1.2 GiB
        with steps("duplicates"):
            result["duplicates"] = duplicates_step(out, cfg, result)
    except NoRows as exc:
        result["n_tracks"] = 0
        result["skipped"] = str(exc)
        clusters = _empty_clusters(manifest)
        cluster_summaries = {"kmeans": [], "hdbscan": [], "hdbscan_noise": None}
        wrote_oof = False
        _write_json(out, outdir.SUMMARIES, cluster_summaries)
    steps.announce("write")
    _finish(out, result, clusters, cluster_summaries, notes, steps, cfg, t_start, wrote_oof)
    steps.close()
    return result


def _write_json(out: str, name: str, obj: object) -> None:
    """Indented JSON with the keys in the order the steps recorded them (not sorted)."""
    outdir.write_bytes(out, name, json.dumps(metrics.json_safe(obj), indent=2).encode())


def _error_shard_paths(out: str) -> list[str]:
    """The per-product error shards under OUT/errors/ a run writes before consolidating them."""
    fs, base = outdir.resolve(out)
    folder = outdir.join(base, outdir.ERRORS_DIR)
    if fs.get_file_info(folder).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(folder))
    return sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and not outdir.is_temporary(i.base_name)
        and i.base_name.endswith(".parquet")
    )


def count_failures(out: str) -> tuple[int, int]:
    """(error rows, distinct failed tracks) from OUT/errors.parquet, else OUT/errors/ shards."""
    consolidated = outdir.read_table(out, outdir.ERRORS)
    if consolidated is not None:
        tables = [consolidated]
    else:
        fs, _ = outdir.resolve(out)
        tables = [pq.read_table(p, filesystem=fs) for p in _error_shard_paths(out)]
    ids = set()
    for t in tables:
        if "track_id" in t.column_names:
            ids.update(t.column("track_id").to_pylist())
    return sum(t.num_rows for t in tables), len(ids)


def _run_records(out: str, result: dict, steps: _Steps, t_start: float) -> dict:
    """Failures, timings and memory into ``result``; returns OUT/run.json (for the report)."""
    n_err_rows, n_failed_tracks = count_failures(out)
    result["n_failed"] = int(n_err_rows)
    result["n_failed_tracks"] = int(n_failed_tracks)
    run = outdir.read_json(out, outdir.RUN)
    timings = dict(run.get("timings", {}) or {})
    result["seconds_per_stage"] = {**timings, **steps.seconds}
    result["tracks_per_node"] = {
        product: info.get("tracks_per_node", {})
        for product, info in (run.get("products", {}) or {}).items()
    }
    result["analysis_seconds"] = round(time.perf_counter() - t_start, 4)
    result["memory"] = {
        "matrix_gib": result.pop("_matrix_gib", None),
        "peak_rss_gib_after_step": dict(steps.peak_rss_gib),
    }
    return run


def _finish(out, result, clusters, cluster_summaries, notes, steps, cfg, t_start, wrote_oof):
    """Write clusters.parquet, the report and metrics.json (last: it lists what was written)."""
    run = _run_records(out, result, steps, t_start)
    result["notes"] = notes + result.get("matrix", {}).get("notes", [])
    table = pa.Table.from_pandas(clusters.reset_index(drop=True), preserve_index=False)
    outdir.write_table(out, outdir.CLUSTERS, table)
    outputs = [outdir.CLUSTERS, outdir.METRICS, outdir.SUMMARIES]
    if wrote_oof:
        outputs.insert(1, outdir.OOF)
    if result.get("duplicates", {}).get("path"):
        outputs.append(outdir.DUPLICATES)
    if cfg.report:
        try:
            from soundclust_ray.report import write_report

            t0 = time.perf_counter()
            write_report(out, metrics.json_safe(result), clusters, cluster_summaries, run, cfg)
            result["seconds_per_stage"]["report"] = round(time.perf_counter() - t0, 4)
            outputs.append(outdir.REPORT)
        except Exception as exc:  # noqa: BLE001 - a broken report must not lose the metrics
            result["report_error"] = f"{type(exc).__name__}: {exc}"
    result["outputs"] = outputs
    safe = metrics.json_safe(result)
    result.clear()
    result.update(safe)
    _write_json(out, outdir.METRICS, safe)
