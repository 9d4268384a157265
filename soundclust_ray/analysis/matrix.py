"""Which matrix the analysis clusters, read from OUT's shards and scaled as it should be.

Features are standardized; embeddings are centered + L2-normalized (seed 000) and not
standardized when alone (seed 001 clusters them directly); ``both`` fuses by block
(analysis/fusion.py): each feature family and the embedding hold a set share of the variance
(equal, or the weights), so a wide block never outvotes a narrow one. ``tabular`` reads
OUT/embeddings/tabular as is: the source already standardized and weighted it (seed 003).
"""

from __future__ import annotations

import numpy as np

from soundclust_ray import outdir
from soundclust_ray.analysis import fusion, gather, scaling
from soundclust_ray.analysis.steps import POOL, affine_step, l2_step, scale_step
from soundclust_ray.config import AnalysisConfig

MATRICES = ("features", "embeddings", "both", "tabular", "auto")
TABULAR_BACKEND = "tabular"
"""Backend name the tabular source (seed 003) writes its vectors under."""


class NoRows(Exception):
    """Nothing to cluster (every track failed, or empty shards): outputs are written empty."""


def choose_matrix(out: str, cfg: AnalysisConfig) -> dict:
    """{matrix, requested[, backend, note]}: what ``cfg.matrix`` means for the shards in OUT.

    ValueError when the request cannot be met (unknown name, missing shards or backend);
    NoRows when ``auto`` finds no shards at all.
    """
    if cfg.matrix not in MATRICES:
        raise ValueError(f"unknown matrix '{cfg.matrix}'; choose one of {', '.join(MATRICES)}")
    backends = gather.embedding_backends(out)
    audio_backends = [b for b in backends if b != TABULAR_BACKEND]
    has_features = bool(gather.feature_products(out))
    matrix = cfg.matrix
    if matrix == "auto":
        matrix = _auto_matrix(audio_backends, has_features, TABULAR_BACKEND in backends)
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
    return info


def _auto_matrix(audio_backends: list[str], has_features: bool, has_tabular: bool) -> str:
    if audio_backends:
        return "embeddings"
    if has_features:
        return "features"
    if has_tabular:
        return "tabular"
    raise NoRows("no feature or embedding shards under OUT (every track failed?)")


def load_matrix(out: str, info: dict, cfg: AnalysisConfig, progress: bool) -> gather.Gathered:
    """The shards ``info`` names, as one matrix (embeddings post-processed); notes into info.

    ``g.steps`` records the post-processing (placement.py's raw rows → these rows)."""
    matrix = info["matrix"]
    if matrix == "tabular":
        info["scaling"] = "none (standardized and weighted by the tabular source, seed 003)"
        return gather.gather_embeddings(out, TABULAR_BACKEND, progress=progress)
    if matrix == "features" and cfg.chunk_level:
        info["features"] = "classic chunks (features_chunks), majority vote per track"
        return gather.gather_features(out, progress=progress, product=outdir.FEATURE_CHUNKS)
    if matrix == "features":
        return gather.gather_features(out, progress=progress)
    g = gather.gather_embeddings(out, info["backend"], progress=progress)
    mean = None
    if cfg.embedding_postprocess and info["backend"] != TABULAR_BACKEND:
        g.X, info["embedding_sanity"], mean = scaling.postprocess_embeddings_fit(g.X)
        info["embeddings"] = "centered + L2-normalized"
    if matrix != "both":
        g.steps = [] if mean is None else embedding_steps(mean, 0)
        return g
    f = gather.gather_features(out, progress=progress)
    steps = [] if mean is None else embedding_steps(mean, len(f.columns))
    g = gather.join_on_tracks(gather.pool_windows(f), gather.pool_windows(g))
    g.steps = [*steps, POOL]
    return g


def embedding_steps(mean: np.ndarray, offset: int) -> list:
    """Centring + L2 of the embedding columns that start at ``offset`` of the raw rows."""
    width = offset + len(mean)
    shift = np.zeros(width)
    shift[offset:] = mean
    return [affine_step(shift, np.ones(width)), l2_step(offset, width)]


def scale_matrix(g: gather.Gathered, info: dict, cfg: AnalysisConfig) -> None:
    """Standardize features, fuse ``both``, weight families in place; what was done into info."""
    if info["matrix"] == "both":
        fuse_both(g, info, cfg)
        return
    if info["matrix"] == "embeddings":
        info["scaling"] = "none (embeddings are compared by direction)"
    elif info["matrix"] == "features":
        stats = scaling.standardize_inplace(g.X)
        g.steps.append(affine_step(stats["mean"], stats["scale"]))
        info["scaling"] = "standard"
        info["n_nonfinite_imputed"] = stats["n_nonfinite"]
    if cfg.weights:
        info["weights"] = scaling.apply_family_weights(g.X, g.columns, cfg.weights)
        family = [scaling.column_family(c) for c in g.columns]
        g.steps.append(scale_step(np.array([info["weights"][f] for f in family], np.float32)))


def fuse_both(g: gather.Gathered, info: dict, cfg: AnalysisConfig) -> None:
    """Feature families + embedding as blocks whose variance shares are the weights (default
    equal); standardizing the joined columns instead gives 180-column timbre 180 / 380 of the
    variance against a 200-d embedding whatever either is worth (docs/quality.md)."""
    weights = dict(cfg.weights)
    info["fusion"], steps = fusion.fuse_families_steps(g.X, g.columns, {info["backend"]}, weights)
    g.steps.extend(steps)
    info["scaling"] = "block fusion: families standardized, the embedding by direction"
    info["weights"] = {name: float(weights.get(name, 1.0)) for name in info["fusion"]}


def gather_matrix(
    out: str, cfg: AnalysisConfig, progress: bool = False
) -> tuple[gather.Gathered, dict]:
    """The matrix ``cfg.matrix`` asks for, scaled as it should be, and what was done to it."""
    info = choose_matrix(out, cfg)
    g = load_matrix(out, info, cfg, progress)
    scale_matrix(g, info, cfg)
    info["n_rows"] = int(g.X.shape[0])
    info["n_columns"] = int(g.X.shape[1])
    info["chunk_level"] = g.chunk_level
    info["notes"] = list(g.notes)
    return g, info
