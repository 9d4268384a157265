"""Block fusion: each block's share of the total variance equals its weight's share."""

from __future__ import annotations

import numpy as np
import pytest

from soundclust_ray.analysis.fusion import (
    block_shares,
    family_blocks,
    fuse_blocks,
    fuse_families_inplace,
    fuse_inplace,
    total_variance,
)


def _blocks(rng: np.random.Generator, n: int = 300) -> dict[str, np.ndarray]:
    """A 180-column feature block with unrelated units, a 200-d embedding in a narrow cone
    whose information sits in 3 directions, and 50 logits on one scale."""
    features = rng.normal(size=(n, 180)) * rng.uniform(0.01, 100.0, size=180) + 7.0
    basis = rng.normal(size=(3, 200))
    embedding = 5.0 + rng.normal(size=(n, 3)) @ basis + 0.01 * rng.normal(size=(n, 200))
    logits = rng.normal(scale=3.0, size=(n, 50)) - 2.0
    return {"timbre": features, "musicnn": embedding, "tags": logits}


KINDS = {"timbre": "standardize", "musicnn": "direction", "tags": "center"}


def _shares(X: np.ndarray, widths: list[int]) -> list[float]:
    bounds = np.cumsum([0, *widths])
    parts = [total_variance(X[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return [p / total_variance(X) for p in parts]


def test_equal_weights_give_equal_variance_shares():
    blocks = _blocks(np.random.default_rng(0))
    X = fuse_blocks(blocks, kinds=KINDS)
    assert X.dtype == np.float32 and X.shape == (300, 430)
    assert _shares(X, [180, 200, 50]) == pytest.approx([1 / 3] * 3, abs=1e-5)
    assert total_variance(X) == pytest.approx(1.0, abs=1e-5)


def test_variance_share_equals_weight():
    blocks = _blocks(np.random.default_rng(1))
    X = fuse_blocks(blocks, weights={"timbre": 1, "musicnn": 3, "tags": 0.5}, kinds=KINDS)
    assert _shares(X, [180, 200, 50]) == pytest.approx([1 / 4.5, 3 / 4.5, 0.5 / 4.5], abs=1e-5)


def test_naive_standardization_lets_the_wide_block_outvote():
    """Why the rule exists: z-scoring the joined columns gives the 180-column block 180/380."""
    blocks = _blocks(np.random.default_rng(2))
    joined = np.concatenate([blocks["timbre"], blocks["musicnn"]], axis=1)
    z = (joined - joined.mean(axis=0)) / joined.std(axis=0)
    assert _shares(z, [180, 200])[0] == pytest.approx(180 / 380, abs=1e-6)
    fused = fuse_blocks({k: blocks[k] for k in ("timbre", "musicnn")}, kinds=KINDS)
    assert _shares(fused, [180, 200]) == pytest.approx([0.5, 0.5], abs=1e-5)


def test_block_kinds_do_what_they_say():
    blocks = _blocks(np.random.default_rng(3))
    X = fuse_blocks(blocks, kinds=KINDS)
    feats, emb, tags = X[:, :180], X[:, 180:380], X[:, 380:]
    assert np.allclose(feats.mean(axis=0), 0, atol=1e-5)
    stds = feats.std(axis=0)
    assert np.allclose(stds, stds[0], rtol=1e-3)  # standardized: equal column spread
    norms = np.linalg.norm(emb, axis=1)
    assert np.allclose(norms, norms[0], rtol=1e-4)  # direction: rows of one length
    ratio = tags.std(axis=0) / blocks["tags"].std(axis=0)
    assert np.allclose(ratio, ratio[0], rtol=1e-4)  # center: one scale for the whole block
    assert np.allclose(tags.mean(axis=0), 0, atol=1e-5)


def test_zero_weight_drops_the_block_and_bad_weights_are_errors():
    blocks = _blocks(np.random.default_rng(4), n=50)
    X = fuse_blocks(blocks, weights={"tags": 0}, kinds=KINDS)
    assert X.shape == (50, 380)
    with pytest.raises(ValueError, match="unknown blocks nope"):
        block_shares(["a"], {"nope": 1})
    with pytest.raises(ValueError, match="finite and >= 0"):
        block_shares(["a"], {"a": -1})
    with pytest.raises(ValueError, match="every block weight is 0"):
        block_shares(["a"], {"a": 0})
    with pytest.raises(ValueError, match="unknown block kind"):
        fuse_blocks({"a": blocks["tags"]}, kinds={"a": "whiten"})
    with pytest.raises(ValueError, match="different row counts"):
        fuse_blocks({"a": blocks["tags"], "b": blocks["tags"][:10]})


def test_in_place_on_row_blocks_equals_one_pass_and_imputes_nan():
    blocks = _blocks(np.random.default_rng(5), n=257)
    X = np.concatenate([blocks["timbre"], blocks["musicnn"]], axis=1).astype(np.float32)
    X[3, 5] = np.nan
    groups = {"timbre": slice(0, 180), "musicnn": slice(180, 380)}
    kinds = {"timbre": "standardize", "musicnn": "direction"}
    small, whole = X.copy(), X.copy()
    info = fuse_inplace(small, groups, kinds, block_rows=16)
    fuse_inplace(whole, groups, kinds, block_rows=10_000)
    assert np.isfinite(small).all() and small[3, 5] == 0.0
    np.testing.assert_allclose(small, whole, atol=1e-6)
    assert info["musicnn"]["share"] == 0.5 and info["timbre"]["kind"] == "standardize"
    assert fuse_blocks({"a": X[:, :180]}).shape == (257, 180)


def test_both_matrix_fuses_families_and_the_embedding_by_name():
    blocks = _blocks(np.random.default_rng(6), n=120)
    X = np.concatenate([blocks["timbre"], blocks["musicnn"]], axis=1).astype(np.float32)
    columns = [f"timbre__f{i:03d}" for i in range(180)] + [
        f"musicnn__emb_{i:03d}" for i in range(200)
    ]
    info = fuse_families_inplace(X, columns, {"musicnn"}, {"musicnn": 2})
    assert info["timbre"]["kind"] == "standardize" and info["musicnn"]["kind"] == "direction"
    assert _shares(X, [180, 200]) == pytest.approx([1 / 3, 2 / 3], abs=1e-5)
    assert family_blocks(["a__x", "a__y", "b__z"]) == {"a": slice(0, 2), "b": slice(2, 3)}
    with pytest.raises(ValueError, match="not contiguous"):
        family_blocks(["a__x", "b__z", "a__y"])
