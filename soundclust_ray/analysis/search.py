"""Similar-track search in the clustering's own geometry, over a FAISS index kept in OUT.

One geometry: the rows searched are the matrix the run clustered, built by the analysis's own
``matrix.gather_matrix`` with the run's analysis config (features standardized, embeddings centred +
L2-normalised — seed 000: centring takes the mean pairwise cosine of CLAP from 0.94 to 0.02 —,
family/block weights, PCA), then L2-normalised so that inner product = cosine. A neighbour list
and a cluster therefore never disagree because of the matrix; ``--json`` states the geometry.

The index is FAISS (``IndexFlatIP``, exact, up to ``SearchConfig.exact_max_rows`` tracks; an
IVF index above), built once and kept in ``OUT/index/`` under a key that hashes the geometry
config and the shard files the matrix is read from: a new shard or a changed config is a new key,
so a stale index is never used. The ``.json`` of a key is written last: a build killed half way
leaves no trusted index.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd
import pyarrow as pa

from soundclust_ray import outdir, shards
from soundclust_ray.config import MATRIX_NAMES as MATRICES
from soundclust_ray.config import AnalysisConfig, SearchConfig, to_dict
from soundclust_ray.errors import UserError

CLOSE_MATCHES = 5
NORMALIZE_BLOCK_ROWS = 65536
"""Rows normalised per block (64k x 512 float32 = 128 MiB of temporaries)."""
NOT_GEOMETRY = {
    "k",
    "k_auto_range",
    "kmeans_n_init",
    "oof",
    "oof_splits",
    "minibatch_above",
    "minibatch_size",
    "hdbscan",
    "hdbscan_min_cluster_size",
    "hdbscan_scale_min_cluster_size",
    "hdbscan_min_samples",
    "neighbors_pca_above",
    "neighbors_pca_dims",
    "umap",
    "umap_n_neighbors",
    "umap_min_dist",
    "silhouette_sample",
    "summary_nearest",
    "summary_top_values",
    "report",
    "report_max_points",
    "report_max_categories",
    "report_duplicate_pairs",
    "predict_batch",
}
"""AnalysisConfig fields that do not change the clustered matrix; every other field (including
ones added later) is part of the index key, so an unknown field can only cause a rebuild."""
IDS_SUFFIX, FAISS_SUFFIX, META_SUFFIX = ".ids.parquet", ".faiss", ".json"


def l2_normalize_inplace(X: np.ndarray, block_rows: int = NORMALIZE_BLOCK_ROWS) -> np.ndarray:
    """Divide each row by its norm, block by block; a block holding non-finite values has them
    zeroed first, and zero rows stay zero. Returns X."""
    for start in range(0, len(X), block_rows):
        b = X[start : start + block_rows]
        norms = np.sqrt(np.einsum("ij,ij->i", b, b))
        if not np.isfinite(norms).all():
            np.nan_to_num(b, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            norms = np.sqrt(np.einsum("ij,ij->i", b, b))
        norms[norms == 0] = 1.0
        b /= norms[:, None]
    return X


def unknown_id_message(track_id: str, track_ids: np.ndarray, source: str = "") -> str:
    """'unknown track id …; close matches: …' using substring hits first, then difflib."""
    query = str(track_id)
    lowered = query.lower()
    hits = [t for t in track_ids if lowered in str(t).lower()][: CLOSE_MATCHES * 20]
    pool = hits if hits else [str(t) for t in track_ids]
    close = difflib.get_close_matches(query, pool, n=CLOSE_MATCHES, cutoff=0.5)
    if not close and hits:
        close = hits[:CLOSE_MATCHES]
    where = f" in {source}" if source else ""
    text = f"unknown track id {query!r}{where} ({len(track_ids)} tracks)"
    return text + (f"; close matches: {', '.join(close)}" if close else "; no close matches")


def config_from_dict(values: dict) -> AnalysisConfig:
    """An AnalysisConfig from its JSON form (metrics.json's ``config``): unknown keys ignored,
    lists back to the tuples the frozen dataclass holds."""

    def tuples(v):
        return tuple(tuples(x) for x in v) if isinstance(v, list) else v

    known = {f.name for f in fields(AnalysisConfig)}
    return AnalysisConfig(**{k: tuples(v) for k, v in values.items() if k in known})


def run_analysis_config(out: str, matrix: str = "auto") -> AnalysisConfig:
    """The analysis config the run clustered with (OUT/metrics.json), its matrix resolved.

    ``matrix`` other than ``auto`` searches another matrix of the run (``embeddings:<backend>``
    or ``tags:<backend>`` picks a backend, ``a+b`` an ensemble); the run's weights and PCA
    then apply only if it is the clustered one.
    """
    kind, _, backend = matrix.partition(":")
    if kind not in MATRICES:
        raise UserError(f"unknown matrix {matrix!r}: use one of {', '.join(MATRICES)}")
    metrics = outdir.read_json(out, outdir.METRICS)
    cfg = config_from_dict(metrics.get("config") or {})
    cfg = resolved_config(cfg, metrics.get("matrix") or {})
    if kind == "auto":
        return cfg
    wanted = replace(cfg, matrix=kind, backend=backend or None)
    if (wanted.matrix, wanted.backend or cfg.backend) == (cfg.matrix, cfg.backend):
        return replace(cfg, backend=cfg.backend)
    return replace(wanted, weights=(), pca=None, chunk_level=False)


def resolved_config(cfg: AnalysisConfig, matrix_info: dict) -> AnalysisConfig:
    """``cfg`` with the matrix and backend the analysis resolved (metrics.json's ``matrix``), so
    the analysis and a later ``similar`` compute the same index key."""
    if not matrix_info.get("matrix"):
        return cfg
    return replace(cfg, matrix=matrix_info["matrix"], backend=matrix_info.get("backend"))


def _shard_listing(out: str) -> list[list]:
    """(OUT-relative path, size) of every product shard: what every matrix is read from."""
    from soundclust_ray.analysis import gather

    fs, base = outdir.resolve(out)
    products = [*shards.feature_products(out), outdir.FEATURE_CHUNKS]
    products += [outdir.embeddings_product(b) for b in gather.embedding_backends(out)]
    listing = []
    for product in products:
        paths = shards.list_shards(out, product)
        for info in fs.get_file_info(paths):
            listing.append([info.path[len(base) :].lstrip("/"), info.size])
    return listing


def index_key(out: str, cfg: AnalysisConfig, exact: bool | None, search: SearchConfig) -> str:
    """Hash of what the index is built from: geometry config, shard files, index choice."""
    geometry = {k: v for k, v in to_dict(cfg).items() if k not in NOT_GEOMETRY}
    payload = {
        "geometry": geometry,
        "shards": _shard_listing(out),
        "exact": exact,
        "search": to_dict(search),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _describe(info: dict, cfg: AnalysisConfig) -> dict:
    """What was done to the rows, for ``--json`` and the index metadata."""
    keep = ("matrix", "backend", "scaling", "embeddings", "weights", "features", "fusion")
    geometry = {k: info[k] for k in keep if k in info}
    geometry["pca"] = cfg.pca
    geometry["rows"] = "L2-normalised after the clustering's post-processing; similarity = cosine"
    return geometry


def clustered_matrix(out: str, cfg: AnalysisConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """(track ids, L2-normalised rows, geometry) of the matrix ``cfg`` clusters, one row per
    track (window rows mean-pooled), built by the analysis's own gathering and PCA steps."""
    from soundclust_ray.analysis import gather, projection
    from soundclust_ray.analysis.matrix import NoRows, gather_matrix

    try:
        g, info = gather_matrix(out, cfg)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc).strip("'\"")) from exc
    except NoRows as exc:
        raise UserError(f"{out}: nothing to search ({exc})") from exc
    if cfg.pca is not None and len(g.X) >= 2:
        g.X, _ = projection.fit_pca_reduction(g.X, cfg.pca, cfg)
    g = gather.pool_windows(g)
    X = l2_normalize_inplace(np.ascontiguousarray(g.X, dtype=np.float32))
    return g.track_ids.astype(str).astype(object), X, _describe(info, cfg)


def build_faiss_index(X: np.ndarray, exact: bool, search: SearchConfig, random_state: int):
    """A FAISS inner-product index over the L2-normalised rows of ``X`` (pure: no OUT).

    Approximate: IVF-Flat with spherical k-means cells trained on a seeded sample; the vectors
    stay uncompressed, so the similarities it returns are exact, only candidates are skipped.
    """
    import faiss

    if exact:
        index = faiss.IndexFlatIP(X.shape[1])
    else:
        index, sample = _empty_ivf(X.shape, search, random_state)
        index.train(X[sample])
    index.add(X)
    return index


def ivf_of_exact_index(flat, search: SearchConfig, random_state: int):
    """The IVF index ``build_faiss_index`` makes of the rows an exact index holds, read from
    it a block at a time: the same cells and rows without a full copy of the matrix beside
    both indexes (that copy raised the 1M x 200 analysis's peak memory, bench/analysis.py)."""
    index, sample = _empty_ivf((flat.ntotal, flat.d), search, random_state)
    index.train(flat.reconstruct_batch(sample))
    for start in range(0, flat.ntotal, search.query_batch):
        index.add(flat.reconstruct_n(start, min(search.query_batch, flat.ntotal - start)))
    return index


def _empty_ivf(shape: tuple[int, int], search: SearchConfig, random_state: int):
    """(untrained IVF-Flat inner-product index with a direct map, sorted seeded ids of the rows
    to train it on) for ``shape`` rows x columns."""
    import faiss

    n, d = shape
    nlist = int(max(1, min(n // 2, round(search.ivf_cells_per_sqrt_row * np.sqrt(n)))))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.spherical = True
    index.cp.seed = random_state
    rng = np.random.default_rng(random_state)
    size = min(n, nlist * search.ivf_train_per_cell)
    index.make_direct_map()
    return index, np.sort(rng.choice(n, size, replace=False))


def _set_nprobe(index, nprobe: int) -> None:
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = min(nprobe, ivf.nlist)


@dataclass
class SearchIndex:
    """A FAISS index, the track id of each of its rows (sorted) and the geometry it holds."""

    track_ids: np.ndarray
    index: object
    geometry: dict
    exact: bool
    key: str = ""

    @property
    def source(self) -> str:
        """``features``, ``both``, ``tabular``, ``embeddings/<backend>`` or ``tags/<backend>``."""
        g = self.geometry
        if g.get("matrix") in ("embeddings", "tags"):
            return f"{g['matrix']}/{g['backend']}"
        return g["matrix"]

    def row_of(self, track_id: str) -> int:
        """Row of a track id; UserError listing close matches when it is unknown."""
        i = int(np.searchsorted(self.track_ids, track_id))
        if i < len(self.track_ids) and self.track_ids[i] == track_id:
            return i
        raise UserError(unknown_id_message(track_id, self.track_ids, self.source))

    def vector(self, row: int) -> np.ndarray:
        """The stored (search-ready) vector of one row, shape (1, d)."""
        return self.index.reconstruct(int(row))[None, :]

    def search(
        self, Q: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cosines) of the k best rows per query, best first; ``exclude[j]`` is a row
        query j must not return (itself), -1 for none; missing neighbours are row -1."""
        Q = np.ascontiguousarray(np.atleast_2d(Q), dtype=np.float32)
        extra = 0 if exclude is None else 1
        k_ask = min(k + extra, self.index.ntotal)
        sim, idx = self.index.search(Q, k_ask)
        if exclude is not None:
            drop = idx == np.asarray(exclude)[:, None]
            idx[drop], sim[drop] = -1, -np.inf
            order = np.argsort(drop, axis=1, kind="stable")
            idx, sim = np.take_along_axis(idx, order, 1), np.take_along_axis(sim, order, 1)
        return idx[:, :k], sim[:, :k]


def _write_index(out: str, si: SearchIndex) -> None:
    """ids, index, then the metadata that makes them trusted; other keys' files removed."""
    import faiss

    ids = pa.table({"track_id": pa.array(si.track_ids.astype(str), pa.string())})
    outdir.write_table(out, outdir.index_file(si.key, IDS_SUFFIX), ids)

    def fill(stream):
        faiss.write_index(si.index, faiss.PyCallbackIOWriter(stream.write))

    outdir.write_stream(out, outdir.index_file(si.key, FAISS_SUFFIX), fill)
    meta = {"key": si.key, "exact": si.exact, "rows": len(si.track_ids), "geometry": si.geometry}
    outdir.write_json(out, outdir.index_file(si.key, META_SUFFIX), meta)
    for name in outdir.list_files(out, outdir.INDEX):
        if not name.startswith(si.key):
            outdir.remove_file(out, f"{outdir.INDEX}/{name}")


def _read_index(out: str, key: str) -> SearchIndex | None:
    import faiss

    meta = outdir.read_json(out, outdir.index_file(key, META_SUFFIX))
    if meta.get("key") != key:
        return None
    ids = outdir.read_table(out, outdir.index_file(key, IDS_SUFFIX))
    index = outdir.read_stream(
        out,
        outdir.index_file(key, FAISS_SUFFIX),
        lambda stream: faiss.read_index(faiss.PyCallbackIOReader(stream.read)),
    )
    if ids is None or index is None or index.ntotal != ids.num_rows:
        return None
    track_ids = np.asarray(ids.column("track_id").to_pylist(), dtype=object)
    return SearchIndex(track_ids, index, meta["geometry"], bool(meta["exact"]), key)


def open_index(
    out: str,
    matrix: str = "auto",
    approximate: bool | None = None,
    search: SearchConfig | None = None,
    cfg: AnalysisConfig | None = None,
) -> SearchIndex:
    """The run's search index, read from OUT/index/ when its key matches, else built there.

    ``approximate``: None lets the corpus size choose (exact up to ``exact_max_rows``).
    ``cfg``: the analysis config with its matrix resolved (the analysis itself passes it, before
    metrics.json exists); None reads the run's from OUT/metrics.json.
    """
    search = search or SearchConfig()
    cfg = cfg or run_analysis_config(out, matrix)
    key = index_key(out, cfg, approximate, search)
    si = _read_index(out, key)
    if si is None:
        track_ids, X, geometry = clustered_matrix(out, cfg)
        exact = len(X) <= search.exact_max_rows if approximate is None else not approximate
        index = build_faiss_index(X, exact, search, cfg.random_state)
        del X
        kind = "IndexFlatIP (exact)" if exact else f"IVF-Flat, {index.nlist} cells (approximate)"
        geometry["index"] = kind
        si = SearchIndex(track_ids, index, geometry, exact, key)
        _write_index(out, si)
    _set_nprobe(si.index, search.ivf_nprobe)
    return si


def similar_tracks(
    out: str,
    track_id: str,
    k: int = 10,
    matrix: str = "auto",
    approximate: bool | None = None,
    nprobe: int | None = None,
) -> pd.DataFrame:
    """The k tracks most similar to ``track_id`` with their manifest metadata.

    Columns: ``rank`` (1 = nearest), ``track_id``, ``similarity`` (cosine), then the manifest's
    metadata columns. ``attrs`` holds the query, the matrix, whether the search was exact and
    the geometry. Unknown id → UserError naming close matches.
    """
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    search = SearchConfig()
    if nprobe is not None:
        search = replace(search, ivf_nprobe=nprobe)
    si = open_index(out, matrix, approximate, search)
    row = si.row_of(str(track_id))
    idx, sim = si.search(si.vector(row), k, exclude=np.array([row]))
    result = neighbour_table(out, si, idx[0], sim[0])
    result.attrs.update(query=str(track_id))
    return result


def neighbour_table(out: str, si: SearchIndex, rows: np.ndarray, sims: np.ndarray) -> pd.DataFrame:
    """rank, track_id, similarity and the manifest's metadata of one query's neighbours."""
    from soundclust_ray.analysis.gather import read_manifest

    keep = rows >= 0
    result = pd.DataFrame(
        {
            "rank": np.arange(1, int(keep.sum()) + 1),
            "track_id": si.track_ids[rows[keep]].astype(str),
            "similarity": sims[keep].astype(np.float64).round(6),
        }
    )
    manifest = read_manifest(out)
    meta = manifest.drop(columns=[c for c in ("invalid_reason",) if c in manifest.columns])
    result = result.merge(meta, on="track_id", how="left")
    result.attrs.update(matrix=si.source, exact=si.exact, geometry=si.geometry)
    return result


def run_tags(out: str) -> tuple[str, np.ndarray, pd.DataFrame]:
    """(backend, track ids, tag probabilities per track) of the run's tagger; UserError when
    no embedding backend of the run wrote ``tag__*`` columns (musicnn does, CLAP does not)."""
    from soundclust_ray.analysis import gather

    for backend in gather.embedding_backends(out):
        g = gather.pool_windows(gather.gather_embeddings(out, backend))
        if g.tags is not None and len(g.tags.columns):
            return backend, g.track_ids.astype(str).astype(object), g.tags
    raise UserError(f"{out} has no tag probabilities: run with a tagger (--embed musicnn)")


def tracks_by_tag(out: str, tag: str, k: int = 10) -> pd.DataFrame:
    """The k tracks with the highest probability of ``tag`` (the tagger's own output), with
    their manifest metadata; an unknown tag is a UserError naming close ones."""
    from soundclust_ray.analysis.gather import read_manifest

    backend, ids, tags = run_tags(out)
    if tag not in tags.columns:
        close = difflib.get_close_matches(tag, list(tags.columns), n=CLOSE_MATCHES, cutoff=0.4)
        hint = f"; close: {', '.join(close)}" if close else "; see --list-tags"
        raise UserError(f"unknown tag {tag!r} of embeddings/{backend}{hint}")
    p = tags[tag].to_numpy(dtype=np.float64)
    order = np.argsort(-np.nan_to_num(p, nan=-np.inf), kind="stable")[:k]
    result = pd.DataFrame(
        {"rank": np.arange(1, len(order) + 1), "track_id": ids[order].astype(str)}
    )
    result["similarity"] = p[order].round(6)
    manifest = read_manifest(out)
    meta = manifest.drop(columns=[c for c in ("invalid_reason",) if c in manifest.columns])
    result = result.merge(meta, on="track_id", how="left")
    geometry = {"ranking": f"probability of tag {tag!r} from embeddings/{backend}"}
    title = f"tracks ranked by the probability of tag {tag!r}"
    result.attrs.update(
        query=f"tag:{tag}", matrix=f"tags/{backend}", exact=True, geometry=geometry, title=title
    )
    return result


def _cell(value: object, width: int) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def format_similar(df: pd.DataFrame, width: int = 40) -> str:
    """A plain-text table of :func:`similar_tracks` output.

    The path column and metadata columns that repeat the track id are left out; cells are
    clipped to ``width`` characters.
    """
    head = df.attrs.get("title") or f"nearest to {df.attrs.get('query', '?')} by cosine similarity"
    if df.attrs.get("matrix"):
        exact = "exact" if df.attrs.get("exact", True) else "approximate"
        head += f" ({df.attrs['matrix']}, {exact})"
    if df.empty:
        return head + "\n(no other tracks)"
    same_as_id = [
        c
        for c in df.columns
        if c not in ("track_id", "rank", "similarity")
        and df[c].astype(str).tolist() == df["track_id"].astype(str).tolist()
    ]
    shown = df.drop(columns=[c for c in ("path", *same_as_id) if c in df.columns])
    cells = [[_cell(v, width) for v in shown.columns]]
    for rec in shown.itertuples(index=False):
        row = []
        for name, value in zip(shown.columns, rec, strict=True):
            row.append(f"{value:.4f}" if name == "similarity" else _cell(value, width))
        cells.append(row)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join([head, *lines])


def format_similar_json(df: pd.DataFrame) -> str:
    """Strict JSON of :func:`similar_tracks` output: query, matrix, exact, geometry, neighbours.

    Missing values become ``null`` (``DataFrame.to_json`` semantics), never a bare ``NaN``.
    """
    neighbours = json.loads(df.to_json(orient="records", date_format="iso"))
    payload = {
        "query": df.attrs.get("query"),
        "matrix": df.attrs.get("matrix"),
        "exact": df.attrs.get("exact", True),
        "geometry": df.attrs.get("geometry", {}),
        "neighbours": neighbours,
    }
    return json.dumps(payload, indent=2, ensure_ascii=False, default=str)
