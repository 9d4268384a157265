"""Embedding sanity checks and the centering + L2 normalization of seed 000.

Contrastive models put their embeddings in a narrow cone (seed 000 measured a mean pairwise
cosine of 0.94 for CLAP); subtracting the corpus mean and re-normalizing spreads them out
(0.02 after), which makes cosine and Euclidean distances discriminative for clustering.
"""

from __future__ import annotations

import numpy as np

from soundclust_ray.config import RANDOM_STATE, EmbedConfig


def center_and_normalize(X: np.ndarray) -> np.ndarray:
    """Subtract the column mean of the finite rows, then scale every row to unit L2 norm.

    Rows that are zero after centering stay zero rather than becoming NaN; non-finite rows
    stay non-finite (the sanity counts report them).
    """
    return center_and_normalize_fit(X)[0]


def center_and_normalize_fit(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`center_and_normalize` and the (d,) float64 mean it subtracted."""
    X = np.asarray(X, dtype=np.float32)
    finite = np.isfinite(X).all(axis=1)
    mean = X[finite].mean(axis=0, dtype=np.float64) if finite.any() else np.zeros(X.shape[1])
    centered = X.astype(np.float64) - mean
    norms = np.linalg.norm(centered, axis=1, keepdims=True)
    safe = np.where(norms > 0, norms, 1.0)
    return (centered / safe).astype(np.float32), mean


def embedding_sanity(
    X: np.ndarray,
    max_rows: int = EmbedConfig.sanity_max_rows,
    random_state: int = RANDOM_STATE,
) -> dict[str, float | int]:
    """Counts of NaN/Inf/zero-norm rows and the mean ± std cosine over distinct pairs of rows.

    The cosine statistics use the valid rows only (finite, non-zero norm), sampled down to
    ``max_rows`` with a seeded generator so a million-row corpus costs the same as 5,000 rows.
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"expected a (rows, dims) matrix, got shape {X.shape}")
    has_nan = np.isnan(X).any(axis=1)
    has_inf = np.isinf(X).any(axis=1)
    norms = np.linalg.norm(np.where(np.isfinite(X), X, 0.0).astype(np.float64), axis=1)
    zero_norm = ~(has_nan | has_inf) & (norms == 0)
    valid = np.flatnonzero(~(has_nan | has_inf | zero_norm))
    if valid.size > max_rows:
        valid = np.sort(np.random.default_rng(random_state).choice(valid, max_rows, replace=False))
    mean_cos = std_cos = float("nan")
    if valid.size >= 2:
        U = X[valid].astype(np.float64) / norms[valid, None]
        cos = (U @ U.T)[np.triu_indices(valid.size, k=1)]
        mean_cos, std_cos = float(cos.mean()), float(cos.std())
    return {
        "n_samples": int(X.shape[0]),
        "n_dims": int(X.shape[1]),
        "n_nan": int(has_nan.sum()),
        "n_inf": int(has_inf.sum()),
        "n_zero_norm": int(zero_norm.sum()),
        "cosine_rows": int(valid.size),
        "mean_pairwise_cosine": mean_cos,
        "std_pairwise_cosine": std_cos,
    }


def sanity_report(
    X: np.ndarray,
    max_rows: int = EmbedConfig.sanity_max_rows,
    random_state: int = RANDOM_STATE,
) -> dict[str, dict[str, float | int]]:
    """Seed 000's before/after check: sanity of the raw and the centered + normalized matrix."""
    return {
        "raw": embedding_sanity(X, max_rows, random_state),
        "centered_normalized": embedding_sanity(center_and_normalize(X), max_rows, random_state),
    }
