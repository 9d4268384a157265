"""The driver step: shards → matrix → scale → cluster → project → clusters, metrics, report.

``analyze(out, cfg)`` runs on the driver after the Ray pipeline (or alone, ``soundclust analyze``).
It reads OUT/manifest.parquet and the shards, and writes:

- OUT/clusters.parquet  track_id, manifest metadata, kmeans, hdbscan, umap_x/y, pca_x/y
- OUT/oof.parquet       out-of-fold k-means distances and labels (seed 004)
- OUT/metrics.json      counts, k, quality scores, sizes, label agreement, seconds per step
- OUT/cluster_summaries.json and OUT/report.html

A step that cannot run on the data (too few tracks for UMAP, one cluster for a silhouette)
records None and a reason instead of failing the run. Chunk-level shards (one row per window)
are clustered per window and each track takes its windows' majority label.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from soundclust_ray import shards
from soundclust_ray.analysis import clustering, gather, metrics, projection, scaling, summaries
from soundclust_ray.config import AnalysisConfig, to_dict

MATRICES = ("features", "embeddings", "both", "tabular", "auto")
TABULAR_BACKEND = "tabular"
"""Backend name the tabular source (seed 003) writes its vectors under."""


class _NoRows(Exception):
    """Nothing to cluster (every track failed, or empty shards): outputs are written empty."""


class _Steps:
    """Times named steps and shows one progress bar over them."""

    def __init__(self, total: int, progress: bool):
        from tqdm.auto import tqdm

        self.seconds: dict[str, float] = {}
        self.peak_rss_gib: dict[str, float] = {}
        self.bar = tqdm(total=total, desc="analysis", disable=not progress, unit="step")

    @contextmanager
    def __call__(self, name: str):
        self.bar.set_description(f"analysis: {name}")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - t0, 4)
            self.peak_rss_gib[name] = _peak_rss_gib()
            self.bar.update(1)

    def close(self) -> None:
        self.bar.set_description("analysis")
        self.bar.close()


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


def _exists(out: str, name: str) -> bool:
    fs, base = shards.resolve(out)
    return fs.get_file_info(shards.join(base, name)).type != pafs.FileType.NotFound


def _read_json(out: str, name: str) -> dict:
    if not _exists(out, name):
        return {}
    fs, base = shards.resolve(out)
    with fs.open_input_stream(shards.join(base, name)) as f:
        try:
            return json.loads(f.read().decode())
        except json.JSONDecodeError:
            return {}


def _write_bytes(out: str, name: str, data: bytes) -> str:
    fs, base = shards.resolve(out)
    fs.create_dir(base, recursive=True)
    path = shards.join(base, name)
    tmp = shards.join(base, f".tmp-{name}")
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)
    return path


def count_failures(out: str) -> tuple[int, int]:
    """(error rows, distinct failed tracks) from OUT/errors.parquet, else OUT/errors/ shards."""
    fs, base = shards.resolve(out)
    if _exists(out, "errors.parquet"):
        tables = [pq.read_table(shards.join(base, "errors.parquet"), filesystem=fs)]
    else:
        tables = list(shards.iter_shard_tables(out, "errors"))
        if not tables:
            fs_paths = []
            sel_dir = shards.join(base, "errors")
            if fs.get_file_info(sel_dir).type == pafs.FileType.Directory:
                sel = pafs.FileSelector(sel_dir)
                fs_paths = [
                    i.path
                    for i in fs.get_file_info(sel)
                    if i.type == pafs.FileType.File
                    and not i.base_name.startswith(".tmp")
                    and i.base_name.endswith(".parquet")
                ]
            tables = [pq.read_table(p, filesystem=fs) for p in sorted(fs_paths)]
    rows = sum(t.num_rows for t in tables)
    ids = set()
    for t in tables:
        if "track_id" in t.column_names:
            ids.update(t.column("track_id").to_pylist())
    return rows, len(ids)


def gather_matrix(
    out: str, cfg: AnalysisConfig, progress: bool = False
) -> tuple[gather.Gathered, dict]:
    """The matrix ``cfg.matrix`` asks for, scaled as it should be, and what was done to it.

    Features are standardized; embeddings are centered + L2-normalized (seed 000) and not
    standardized when alone (seed 001 clusters them directly); ``both`` standardizes the
    joined matrix so neither part drowns the other, then family weights apply. ``tabular``
    reads OUT/embeddings/tabular as is: the source already standardized and weighted it
    (seed 003).
    """
    if cfg.matrix not in MATRICES:
        raise ValueError(f"unknown matrix '{cfg.matrix}'; choose one of {', '.join(MATRICES)}")
    backends = gather.embedding_backends(out)
    audio_backends = [b for b in backends if b != TABULAR_BACKEND]
    has_features = bool(shards.list_shards(out, "features"))
    matrix = cfg.matrix
    if matrix == "auto":
        if audio_backends:
            matrix = "embeddings"
        elif has_features:
            matrix = "features"
        elif TABULAR_BACKEND in backends:
            matrix = "tabular"
        else:
            raise _NoRows("no feature or embedding shards under OUT (every track failed?)")
    info: dict = {"matrix": matrix, "requested": cfg.matrix}
    if matrix in ("embeddings", "both"):
        if not backends:
            raise ValueError(
                f"matrix '{matrix}' needs embeddings, but OUT/embeddings/ has no shards"
            )
        backend = cfg.backend or (audio_backends or backends)[0]
        if backend not in backends:
            raise ValueError(
                f"embedding backend '{backend}' not found; present: {', '.join(backends)}"
            )
        info["backend"] = backend
        if cfg.backend is None and len(backends) > 1:
            info["note"] = f"several backends ({', '.join(backends)}); used '{backend}'"
    if matrix in ("features", "both") and not has_features:
        raise ValueError(f"matrix '{matrix}' needs feature shards, but OUT/features/ has none")
    if matrix == "tabular" and TABULAR_BACKEND not in backends:
        raise ValueError(
            f"matrix 'tabular' needs OUT/embeddings/{TABULAR_BACKEND}/ shards (--source tabular)"
        )

    if matrix == "tabular":
        g = gather.gather_embeddings(out, TABULAR_BACKEND, progress=progress)
        info["scaling"] = "none (standardized and weighted by the tabular source, seed 003)"
    elif matrix == "features" and cfg.chunk_level:
        g = gather.gather_features(out, progress=progress, product="features_chunks")
        info["features"] = "classic chunks (features_chunks), majority vote per track"
    elif matrix == "features":
        g = gather.gather_features(out, progress=progress)
    else:
        g = gather.gather_embeddings(out, info["backend"], progress=progress)
        if cfg.embedding_postprocess and info["backend"] != TABULAR_BACKEND:
            g.X, info["embedding_sanity"] = scaling.postprocess_embeddings(g.X)
            info["embeddings"] = "centered + L2-normalized"
        if matrix == "both":
            f = gather.gather_features(out, progress=progress)
            g = gather.join_on_tracks(gather.pool_windows(f), gather.pool_windows(g))

    if matrix == "embeddings":
        info["scaling"] = "none (embeddings are compared by direction)"
    elif matrix in ("features", "both"):
        stats = scaling.standardize_inplace(g.X)
        info["scaling"] = "standard"
        info["n_nonfinite_imputed"] = stats["n_nonfinite"]
    if cfg.weights:
        info["weights"] = scaling.apply_family_weights(g.X, g.columns, cfg.weights)
    info["n_rows"] = int(g.X.shape[0])
    info["n_columns"] = int(g.X.shape[1])
    info["chunk_level"] = g.chunk_level
    info["notes"] = list(g.notes)
    return g, info


def _empty_clusters(manifest: pd.DataFrame) -> pd.DataFrame:
    df = manifest.iloc[:0].copy()
    for col, dtype in (("kmeans", "int32"), ("hdbscan", "int32")):
        df[col] = pd.Series(dtype=dtype)
    for col in ("umap_x", "umap_y", "pca_x", "pca_y"):
        df[col] = pd.Series(dtype="float32")
    return df


def _per_track(track_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of window-level rows per track (coordinates), tracks sorted."""
    ids, inverse = np.unique(track_ids.astype(str), return_inverse=True)
    counts = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    acc = np.zeros((len(ids), values.shape[1]), dtype=np.float64)
    np.add.at(acc, inverse, values)
    return ids, (acc / counts[:, None]).astype(np.float32)


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


def analyze(
    out: str,
    cfg: AnalysisConfig | None = None,
    label_col: str | None = None,
    progress: bool = True,
) -> dict:
    """Run the driver analysis on OUT and write its outputs; returns the metrics dict.

    Raises ValueError for user errors (unknown matrix, label column missing from the manifest,
    no shards); everything the data cannot support is recorded in the metrics instead.
    """
    cfg = cfg or AnalysisConfig()
    t_start = time.perf_counter()
    manifest = gather.read_manifest(out)
    if label_col is not None and label_col not in manifest.columns:
        meta_cols = [c for c in manifest.columns if c not in ("track_id", "path")]
        raise ValueError(
            f"label column '{label_col}' is not in the manifest; its metadata columns are: "
            + (", ".join(meta_cols) if meta_cols else "(none)")
        )
    steps = _Steps(total=12, progress=progress)
    notes: list[str] = []
    result: dict = {"out": out, "label_col": label_col, "config": to_dict(cfg)}
    try:
        with steps("gather"):
            g, matrix_info = gather_matrix(out, cfg, progress=progress)
        result["_matrix_gib"] = round(g.X.nbytes / 2**30, 3)
        if g.X.shape[0] == 0:
            raise _NoRows("the shards hold no rows")
        result["matrix"] = {k: v for k, v in matrix_info.items() if k != "embedding_sanity"}
        if "embedding_sanity" in matrix_info:
            result["embedding_sanity"] = matrix_info["embedding_sanity"]
        X = g.X
        with steps("pca"):
            if cfg.pca is not None and X.shape[0] >= 2:
                X, result["pca"] = projection.fit_pca_reduction(
                    X, cfg.pca, cfg.random_state, cfg.fit_sample, cfg.predict_batch
                )
        n_rows = X.shape[0]
        track_ids = g.track_ids
        unique_tracks = np.unique(track_ids.astype(str)) if g.chunk_level else track_ids
        n_tracks = len(unique_tracks)
        result["n_tracks"] = int(n_tracks)
        if g.chunk_level:
            result["n_windows"] = int(n_rows)

        k_req = cfg.k
        with steps("k selection"):
            if isinstance(k_req, str):
                if k_req != "auto":
                    raise ValueError(f"k must be an integer or 'auto', got '{k_req}'")
                try:
                    k_best, curve = clustering.select_k(
                        X,
                        cfg.k_auto_range,
                        cfg.silhouette_sample,
                        cfg.random_state,
                        cfg.kmeans_n_init,
                    )
                    result["k_selection"] = {
                        "range": list(cfg.k_auto_range),
                        "curve": curve,
                        "best": k_best,
                    }
                    k_req = k_best
                except ValueError as exc:
                    result["k_selection"] = {"skipped": str(exc)}
                    k_req = cfg.k_auto_range[0]
        k = int(k_req)
        k_max = max(1, n_rows - 1)
        if k > k_max:
            notes.append(f"k={k} clamped to {k_max} for {n_rows} rows")
            k = k_max
        result["k"] = k

        with steps("kmeans"):
            if n_rows >= 1:
                km_labels, centres = clustering.fit_kmeans(
                    X,
                    k,
                    cfg.kmeans_n_init,
                    cfg.random_state,
                    cfg.minibatch_above,
                    cfg.minibatch_size,
                )
            else:
                km_labels, centres = np.zeros(0, dtype=np.int32), np.zeros((0, X.shape[1]))

        with steps("oof kmeans"):
            oof_path = None
            if cfg.oof:
                oof_path = _write_oof(out, g, X, k, cfg, result)

        with steps("neighbour pca"):
            Xn = X
            wide = X.shape[1] > cfg.neighbors_pca_dims
            if (cfg.hdbscan or cfg.umap) and n_rows > cfg.neighbors_pca_above and wide:
                Xn, result["neighbors_pca"] = projection.fit_pca_reduction(
                    X,
                    cfg.neighbors_pca_dims,
                    cfg.random_state,
                    cfg.fit_sample,
                    cfg.predict_batch,
                )

        with steps("hdbscan"):
            if not cfg.hdbscan:
                hdb_labels = np.full(n_rows, -1, dtype=np.int32)
                result["hdbscan"] = {"skipped": "turned off (hdbscan=False)"}
            else:
                hdb_labels, result["hdbscan"] = clustering.fit_hdbscan(
                    Xn,
                    cfg.hdbscan_min_cluster_size,
                    cfg.hdbscan_min_samples,
                    cfg.fit_sample,
                    cfg.random_state,
                    cfg.predict_batch,
                    progress,
                )

        with steps("umap"):
            try:
                if not cfg.umap:
                    raise ValueError("turned off (umap=False)")
                umap_xy, result["umap"] = projection.fit_umap_2d(
                    Xn,
                    cfg.umap_n_neighbors,
                    cfg.umap_min_dist,
                    cfg.random_state,
                    cfg.fit_sample,
                    cfg.predict_batch,
                    progress,
                )
            except ValueError as exc:
                umap_xy = np.full((n_rows, 2), np.nan, dtype=np.float32)
                result["umap"] = {"skipped": str(exc)}
            del Xn

        with steps("pca map"):
            try:
                pca_xy, result["pca_map"] = projection.fit_pca_2d(
                    X, cfg.random_state, cfg.fit_sample, cfg.predict_batch
                )
            except ValueError as exc:
                pca_xy = np.full((n_rows, 2), np.nan, dtype=np.float32)
                result["pca_map"] = {"skipped": str(exc)}

        with steps("metrics"):
            km_m = metrics.internal_metrics(X, km_labels, cfg.silhouette_sample, cfg.random_state)
            hdb_m = metrics.internal_metrics(
                X, hdb_labels, cfg.silhouette_sample, cfg.random_state, ignore_noise=True
            )
            if g.chunk_level:
                km_m["level"] = hdb_m["level"] = "window"
                ids_k, km_track = clustering.vote_windows(track_ids, km_labels)
                _, hdb_track = clustering.vote_windows(track_ids, hdb_labels)
                _, umap_track = _per_track(track_ids, umap_xy)
                _, pca_track = _per_track(track_ids, pca_xy)
                track_index = ids_k
            else:
                km_track, hdb_track = km_labels, hdb_labels
                umap_track, pca_track = umap_xy, pca_xy
                track_index = track_ids
            result["silhouette"] = km_m["silhouette"]
            result["davies_bouldin"] = km_m["davies_bouldin"]
            result["calinski_harabasz"] = km_m["calinski_harabasz"]
            result["kmeans_metrics"] = km_m
            result["hdbscan_metrics"] = hdb_m
            result["cluster_sizes"] = {
                "kmeans": metrics.cluster_sizes(km_track),
                "hdbscan": metrics.cluster_sizes(hdb_track),
            }
            result["n_hdbscan_clusters"] = int(len(np.unique(hdb_track[hdb_track >= 0])))
            result["noise_fraction"] = float(np.mean(hdb_track < 0)) if len(hdb_track) else None
            clusters = pd.DataFrame({"track_id": np.asarray(track_index).astype(str)})
            clusters = clusters.merge(manifest, on="track_id", how="left")
            clusters["kmeans"] = np.asarray(km_track, dtype=np.int32)
            clusters["hdbscan"] = np.asarray(hdb_track, dtype=np.int32)
            clusters["umap_x"], clusters["umap_y"] = umap_track[:, 0], umap_track[:, 1]
            clusters["pca_x"], clusters["pca_y"] = pca_track[:, 0], pca_track[:, 1]
            tags_track = None
            if g.tags is not None:
                tags_track = (
                    g.tags.groupby(np.unique(track_ids.astype(str), return_inverse=True)[1]).mean()
                    if g.chunk_level
                    else g.tags
                ).reset_index(drop=True)
                clusters["top_tags"] = _top_tags_text(tags_track, cfg.summary_top_values)
            if label_col is not None:
                lab = {
                    "kmeans": metrics.label_metrics(clusters[label_col], km_track),
                    "hdbscan": metrics.label_metrics(clusters[label_col], hdb_track),
                }
                result["label_metrics"] = lab
                for key in ("nmi", "ari", "homogeneity", "completeness", "contingency"):
                    result[key] = lab["kmeans"].get(key)

        with steps("summaries"):
            meta = clusters.drop(
                columns=["kmeans", "hdbscan", "umap_x", "umap_y", "pca_x", "pca_y", "top_tags"],
                errors="ignore",
            )
            Xs = X
            km_centres = {i: c for i, c in enumerate(centres)}
            if g.chunk_level:
                Xs = gather.pool_windows(gather.Gathered(track_ids, X, g.columns, g.window_index)).X
                km_centres = None
            cluster_summaries = {
                "kmeans": summaries.summarize_clusters(
                    Xs,
                    km_track,
                    meta,
                    km_centres,
                    tags_track,
                    cfg.summary_nearest,
                    cfg.summary_top_values,
                ),
                "hdbscan": summaries.summarize_clusters(
                    Xs,
                    hdb_track,
                    meta,
                    None,
                    tags_track,
                    cfg.summary_nearest,
                    cfg.summary_top_values,
                ),
            }
            _write_bytes(
                out,
                "cluster_summaries.json",
                json.dumps(metrics.json_safe(cluster_summaries), indent=2).encode(),
            )
    except _NoRows as exc:
        result["n_tracks"] = 0
        result["skipped"] = str(exc)
        clusters = _empty_clusters(manifest)
        cluster_summaries = {"kmeans": [], "hdbscan": []}
        oof_path = None
    steps.bar.set_description("analysis: write")
    _finish(out, result, clusters, cluster_summaries, notes, steps, cfg, t_start, oof_path)
    steps.close()
    return result


def _write_oof(
    out: str, g: gather.Gathered, X: np.ndarray, k: int, cfg: AnalysisConfig, result: dict
) -> str | None:
    """Seed 004's out-of-fold MiniBatchKMeans (n_init="auto") → OUT/oof.parquet, or a reason."""
    from soundclust_ray.analysis.oof import OofParams, fit_oof_kmeans

    try:
        dist, labels = fit_oof_kmeans(X, OofParams.for_analysis(cfg, k))
    except ValueError as exc:
        result["oof"] = {"skipped": str(exc)}
        return None
    cols: dict[str, pa.Array] = {"track_id": pa.array(g.track_ids.astype(str), pa.string())}
    if g.window_index is not None:
        cols["window_index"] = pa.array(g.window_index, pa.int32())
    for j in range(k):
        cols[f"dist_{j:02d}"] = pa.array(dist[:, j], pa.float32())
    cols["label"] = pa.array(labels, pa.int32())
    fs, base = shards.resolve(out)
    path = shards.join(base, "oof.parquet")
    shards.write_table_atomic(fs, path, pa.table(cols))
    result["oof"] = {"path": "oof.parquet", "k": k, "splits": cfg.oof_splits}
    return path


def _finish(out, result, clusters, cluster_summaries, notes, steps, cfg, t_start, oof_path):
    n_err_rows, n_failed_tracks = count_failures(out)
    result["n_failed"] = int(n_err_rows)
    result["n_failed_tracks"] = int(n_failed_tracks)
    run = _read_json(out, "run.json")
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
    result["notes"] = notes + result.get("matrix", {}).get("notes", [])
    fs, base = shards.resolve(out)
    table = pa.Table.from_pandas(clusters.reset_index(drop=True), preserve_index=False)
    shards.write_table_atomic(fs, shards.join(base, "clusters.parquet"), table)
    outputs = ["clusters.parquet", "metrics.json", "cluster_summaries.json"]
    if oof_path:
        outputs.insert(1, "oof.parquet")
    if cfg.report:
        try:
            from soundclust_ray.report import write_report

            t0 = time.perf_counter()
            write_report(out, metrics.json_safe(result), clusters, cluster_summaries, run, cfg)
            result["seconds_per_stage"]["report"] = round(time.perf_counter() - t0, 4)
            outputs.append("report.html")
        except Exception as exc:  # noqa: BLE001 - a broken report must not lose the metrics
            result["report_error"] = f"{type(exc).__name__}: {exc}"
    result["outputs"] = outputs
    safe = metrics.json_safe(result)
    result.clear()
    result.update(safe)
    _write_bytes(out, "metrics.json", json.dumps(safe, indent=2).encode())


def config_with(cfg: AnalysisConfig | None = None, **changes) -> AnalysisConfig:
    """A copy of ``cfg`` (or the defaults) with fields replaced; None values are ignored."""
    cfg = cfg or AnalysisConfig()
    return replace(cfg, **{k: v for k, v in changes.items() if v is not None})
