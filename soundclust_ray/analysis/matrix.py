"""Which matrix the analysis clusters, read from OUT's shards and scaled as it should be.

Features are standardized; embeddings are centered + L2-normalized (seed 000) and not
standardized when alone (seed 001 clusters them directly); ``tags`` are a musicnn model's tag
probabilities (the shards' ``tag__*``: mean over patches of the sigmoid of the logits), treated
like an embedding: the default, because they win bench/quality.py (config.DEFAULT_MATRIX).
Several backends (an ensemble) and ``both`` fuse by block (analysis/fusion.py): each feature
family and each backend hold a set share of the variance (equal, or the weights), so a wide
block never outvotes a narrow one. ``tabular`` reads OUT/embeddings/tabular as is: the source
already standardized and weighted it (seed 003).
"""

from __future__ import annotations

import re

import numpy as np

from soundclust_ray import outdir
from soundclust_ray.analysis import fusion, gather, scaling
from soundclust_ray.analysis.steps import POOL, affine_step, l2_step, scale_step
from soundclust_ray.config import MATRIX_NAMES, AnalysisConfig

MATRICES = MATRIX_NAMES
BACKEND_MATRICES = ("embeddings", "tags", "both")
"""Matrices read from OUT/embeddings/<backend>: one backend, or several as an ensemble."""
TABULAR_BACKEND = "tabular"
"""Backend name the tabular source (seed 003) writes its vectors under."""


class NoRows(Exception):
    """Nothing to cluster (every track failed, or empty shards): outputs are written empty."""


def requested_backends(backend: str | None) -> list[str]:
    """``--backend``: one backend, or several joined by ``,`` or ``+`` (an ensemble); [] when
    not given. ``+`` is how metrics.json names an ensemble, so a resolved config reads back."""
    return [b for b in re.split(r"[,+]", backend or "") if b]


def choose_matrix(out: str, cfg: AnalysisConfig) -> dict:
    """{matrix, requested[, backends, backend, note]}: what ``cfg.matrix`` means for OUT's shards.

    ``backend`` names the backends joined by ``+``. ValueError when the request cannot be met
    (unknown name, missing shards or backend, no tags); NoRows when ``auto`` finds no shards.
    """
    if cfg.matrix not in MATRICES:
        raise ValueError(f"unknown matrix '{cfg.matrix}'; choose one of {', '.join(MATRICES)}")
    present = gather.embedding_backends(out)
    asked = requested_backends(cfg.backend)
    missing = [b for b in asked if b not in present]
    if missing:
        raise ValueError(
            f"embedding backend '{missing[0]}' not found; present: {', '.join(present) or 'none'}"
        )
    candidates = asked or [b for b in present if b != TABULAR_BACKEND] or present
    tagged = [b for b in candidates if b != TABULAR_BACKEND and gather.backend_has_tags(out, b)]
    has_features = bool(gather.feature_products(out))
    matrix = cfg.matrix
    if matrix == "auto":
        matrix = _auto_matrix(asked, candidates, tagged, has_features, TABULAR_BACKEND in present)
    info: dict = {"matrix": matrix, "requested": cfg.matrix}
    if matrix in BACKEND_MATRICES:
        backends = _matrix_backends(matrix, asked, candidates, tagged)
        info["backends"], info["backend"] = backends, "+".join(backends)
        if len(backends) > 1:
            info["note"] = (
                f"ensemble of {', '.join(backends)}: one block each, equal variance shares "
                "(--backend picks one, --weights sets the shares)"
            )
    if matrix in ("features", "both") and not has_features:
        raise ValueError(f"matrix '{matrix}' needs feature shards, but OUT/features/ has none")
    if matrix == "tabular" and TABULAR_BACKEND not in present:
        raise ValueError(
            f"matrix 'tabular' needs OUT/embeddings/{TABULAR_BACKEND}/ shards (--source tabular)"
        )
    return info


def _auto_matrix(
    asked: list[str],
    candidates: list[str],
    tagged: list[str],
    has_features: bool,
    has_tabular: bool,
) -> str:
    """Tag probabilities where a model wrote them (every asked backend, or any when none was
    asked): they win bench/quality.py (config.DEFAULT_MATRIX); else embeddings, features,
    the tabular vectors."""
    if tagged and (not asked or len(tagged) == len(asked)):
        return "tags"
    if candidates and candidates != [TABULAR_BACKEND]:
        return "embeddings"
    if has_features:
        return "features"
    if has_tabular:
        return "tabular"
    raise NoRows("no feature or embedding shards under OUT (every track failed?)")


def _matrix_backends(
    matrix: str, asked: list[str], candidates: list[str], tagged: list[str]
) -> list[str]:
    """The backends a backend matrix reads: those asked, else every candidate (``tags``: every
    one that wrote tags). ValueError when there is none, or an asked one has no tags."""
    if matrix == "tags":
        untagged = [b for b in asked if b not in tagged]
        if untagged:
            raise ValueError(
                f"matrix 'tags' needs tag probabilities, but embeddings/{untagged[0]} has none "
                "(musicnn models write them, CLAP does not)"
            )
        if not tagged:
            raise ValueError(
                "matrix 'tags' needs tag probabilities, but no backend in OUT/embeddings/ "
                "wrote them (run with --embed musicnn)"
            )
        return tagged
    if not candidates:
        raise ValueError(f"matrix '{matrix}' needs embeddings, but OUT/embeddings/ has no shards")
    return candidates


def backend_views(out: str, info: dict, progress: bool) -> gather.Gathered:
    """Each backend's vectors (``tags``: its tag probabilities), ensembles joined on tracks."""
    views = []
    for backend in info["backends"]:
        g = gather.gather_embeddings(out, backend, progress=progress)
        views.append(gather.tags_view(g, backend) if info["matrix"] == "tags" else g)
    return gather.join_backends(views)


def load_matrix(out: str, info: dict, cfg: AnalysisConfig, progress: bool) -> gather.Gathered:
    """The shards ``info`` names, as one matrix (one backend's rows post-processed); notes into
    info. ``g.steps`` records the post-processing (placement.py's raw rows → these rows);
    ensembles are post-processed by the fusion in :func:`scale_matrix`."""
    matrix = info["matrix"]
    if matrix == "tabular":
        info["scaling"] = "none (standardized and weighted by the tabular source, seed 003)"
        return gather.gather_embeddings(out, TABULAR_BACKEND, progress=progress)
    if matrix == "features" and cfg.chunk_level:
        info["features"] = "classic chunks (features_chunks), majority vote per track"
        return gather.gather_features(out, progress=progress, product=outdir.FEATURE_CHUNKS)
    if matrix == "features":
        return gather.gather_features(out, progress=progress)
    g = backend_views(out, info, progress)
    single = len(info["backends"]) == 1
    mean = None
    if single and cfg.embedding_postprocess and info["backend"] != TABULAR_BACKEND:
        g.X, info["embedding_sanity"], mean = scaling.postprocess_embeddings_fit(g.X)
        info["embeddings"] = "centered + L2-normalized"
    if matrix != "both":
        g.steps = [] if mean is None else embedding_steps(mean, 0)
        return g
    f = gather.gather_features(out, progress=progress)
    steps = [] if mean is None else embedding_steps(mean, len(f.columns))
    g = gather.join_on_tracks(gather.pool_windows(f), gather.pool_windows(g))
    g.steps = [*steps, POOL] if single else []
    return g


def embedding_steps(mean: np.ndarray, offset: int) -> list:
    """Centring + L2 of the embedding columns that start at ``offset`` of the raw rows."""
    width = offset + len(mean)
    shift = np.zeros(width)
    shift[offset:] = mean
    return [affine_step(shift, np.ones(width)), l2_step(offset, width)]


def scale_matrix(g: gather.Gathered, info: dict, cfg: AnalysisConfig) -> None:
    """Standardize features, fuse ``both``, weight families in place; what was done into info."""
    if info["matrix"] == "both" or len(info.get("backends", ())) > 1:
        fuse_blocks(g, info, cfg)
        return
    if info["matrix"] in ("embeddings", "tags"):
        info["scaling"] = f"none ({info['matrix']} are compared by direction)"
    elif info["matrix"] == "features":
        stats = scaling.standardize_inplace(g.X)
        g.steps.append(affine_step(stats["mean"], stats["scale"]))
        info["scaling"] = "standard"
        info["n_nonfinite_imputed"] = stats["n_nonfinite"]
    if cfg.weights:
        info["weights"] = scaling.apply_family_weights(g.X, g.columns, cfg.weights)
        family = [scaling.column_family(c) for c in g.columns]
        g.steps.append(scale_step(np.array([info["weights"][f] for f in family], np.float32)))


def fuse_blocks(g: gather.Gathered, info: dict, cfg: AnalysisConfig) -> None:
    """``both`` and ensembles: each feature family and each backend one block whose variance
    share is its weight (default equal); standardizing the joined columns instead gives
    180-column timbre 180 / 380 of the variance against a 200-d embedding whatever either is
    worth (docs/quality.md). Blocks of one backend (its embedding or tags) go by direction."""
    weights = dict(cfg.weights)
    info["fusion"], steps = fusion.fuse_families_steps(
        g.X, g.columns, set(info["backends"]), weights
    )
    g.steps.extend(steps)
    if info["matrix"] == "both":
        info["scaling"] = "block fusion: families standardized, each backend by direction"
    else:
        info["scaling"] = f"block fusion: each backend's {info['matrix']} by direction"
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
