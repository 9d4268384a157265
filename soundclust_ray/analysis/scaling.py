"""Scaling of the gathered matrix, in place and in row blocks so memory stays at one matrix.

Equivalent to scikit-learn's StandardScaler (population std, constant columns keep scale 1),
with non-finite values imputed by the column mean (0 after scaling) and counted, because one
NaN feature of one track must not poison a million-row fit.
"""

from __future__ import annotations

import numpy as np

BLOCK_ROWS = 16384
"""Rows per block of the scaler (each float64 temporary is 64 MiB at d=512)."""


def standardize_inplace(X: np.ndarray, block_rows: int = BLOCK_ROWS) -> dict:
    """Standardize float32 ``X`` column-wise in place; returns mean, scale and non-finite count."""
    n, d = X.shape
    total = np.zeros(d, dtype=np.float64)
    count = np.zeros(d, dtype=np.int64)
    for start in range(0, n, block_rows):
        b = X[start : start + block_rows].astype(np.float64)
        finite = np.isfinite(b)
        total += np.where(finite, b, 0.0).sum(axis=0)
        count += finite.sum(axis=0)
    mean = np.divide(total, count, out=np.zeros(d), where=count > 0)
    sq = np.zeros(d, dtype=np.float64)
    for start in range(0, n, block_rows):
        b = X[start : start + block_rows].astype(np.float64) - mean
        sq += np.where(np.isfinite(b), b * b, 0.0).sum(axis=0)
    var = np.divide(sq, count, out=np.zeros(d), where=count > 0)
    scale = np.sqrt(var)
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
    n_nonfinite = int(n * d - count.sum())
    apply_scaling_inplace(X, mean, scale, block_rows)
    return {"mean": mean, "scale": scale, "n_nonfinite": n_nonfinite}


def apply_scaling_inplace(
    X: np.ndarray, mean: np.ndarray, scale: np.ndarray, block_rows: int = BLOCK_ROWS
) -> np.ndarray:
    """``(X - mean) / scale`` in place, block by block (float64 arithmetic, non-finite → 0)."""
    for start in range(0, X.shape[0], block_rows):
        b = X[start : start + block_rows]
        z = (b.astype(np.float64) - mean) / scale
        z[~np.isfinite(z)] = 0.0
        b[...] = z
    return X


def parse_weights(spec: str | None) -> tuple[tuple[str, float], ...]:
    """``"timbre=1,classic=0.5"`` → (("timbre", 1.0), ("classic", 0.5)); bad entries: ValueError."""
    if not spec:
        return ()
    pairs = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"bad weight '{item}': expected family=number")
        try:
            w = float(value)
        except ValueError:
            raise ValueError(f"bad weight '{item}': '{value}' is not a number") from None
        if not np.isfinite(w) or w < 0:
            raise ValueError(f"bad weight '{item}': weights must be finite and >= 0")
        pairs.append((name.strip(), w))
    return tuple(pairs)


def column_family(column: str) -> str:
    """The family of a ``family__name`` column (the part before the first '__')."""
    return column.split("__", 1)[0]


def apply_family_weights(
    X: np.ndarray, columns: list[str], weights: tuple[tuple[str, float], ...] | dict[str, float]
) -> dict[str, float]:
    """Multiply each family's columns by its weight in place; unknown families are a ValueError.

    Returns the weight used per family present (1.0 where none was given).
    """
    w = dict(weights)
    families = list(dict.fromkeys(column_family(c) for c in columns))
    unknown = sorted(set(w) - set(families))
    if unknown:
        raise ValueError(
            f"weights name unknown families {', '.join(unknown)}; present: {', '.join(families)}"
        )
    fam = np.array([column_family(c) for c in columns])
    used = {}
    for name in families:
        weight = float(w.get(name, 1.0))
        used[name] = weight
        if weight != 1.0:
            X[:, fam == name] *= np.float32(weight)
    return used


def postprocess_embeddings(X: np.ndarray) -> tuple[np.ndarray, dict]:
    """Center + L2-normalize embeddings (seed 000), with the sanity dicts before and after."""
    Y, sanity, _ = postprocess_embeddings_fit(X)
    return Y, sanity


def postprocess_embeddings_fit(X: np.ndarray) -> tuple[np.ndarray, dict, np.ndarray]:
    """:func:`postprocess_embeddings` and the mean it subtracted (for the placement steps)."""
    from soundclust_ray.embed.postprocess import center_and_normalize_fit, embedding_sanity

    before = embedding_sanity(X)
    Y, mean = center_and_normalize_fit(X)
    after = embedding_sanity(Y)
    return np.asarray(Y, dtype=np.float32), {"before": before, "after": after}, mean
