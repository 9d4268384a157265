"""Placement: new rows land in the saved clusters and map, old rows never move."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from soundclust_ray import outdir
from soundclust_ray.analysis.placement import (
    apply_steps,
    centre_l2_steps,
    fit_placement,
    load_placement,
    pca_step,
    place,
    save_placement,
    standardize_step,
)
from soundclust_ray.analysis.scaling import standardize_inplace
from soundclust_ray.config import PlacementConfig
from soundclust_ray.embed.postprocess import center_and_normalize


def blobs(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 6)) * 10 + 50
    truth = rng.integers(0, 3, n)
    return (centres[truth] + rng.normal(size=(n, 6))).astype(np.float32), truth


def test_steps_reproduce_the_analysis_scaling():
    X, _ = blobs(0)
    ref = X.copy()
    standardize_inplace(ref)
    np.testing.assert_allclose(apply_steps([standardize_step(X)], X), ref, atol=1e-5)
    np.testing.assert_allclose(
        apply_steps(centre_l2_steps(X), X), center_and_normalize(X), atol=1e-6
    )


@pytest.fixture()
def fitted(tmp_path):
    X, truth = blobs(1)
    steps = [standardize_step(X)]
    Z = apply_steps(steps, X)
    km = KMeans(3, n_init=4, random_state=0).fit(Z)
    hdb = np.where(np.arange(len(Z)) % 17 == 0, -1, km.labels_).astype(np.int32)
    umap_xy = (np.eye(3)[km.labels_][:, :2] * 10 + 0.01 * np.arange(len(Z))[:, None]).astype(
        np.float32
    )
    pca = PCA(2, random_state=0).fit(Z)
    cfg = PlacementConfig(neighbours=5, map_sample=200)
    model = fit_placement(
        steps, Z, km.cluster_centers_, hdb, umap_xy, pca_step(pca.mean_, pca.components_), cfg, 0
    )
    out = str(tmp_path / "out")
    save_placement(out, model)
    return {"out": out, "X": X, "Z": Z, "km": km, "hdb": hdb, "umap": umap_xy, "pca": pca}


def test_saved_without_pickle_and_reloaded_equal(fitted):
    data = outdir.read_bytes(fitted["out"], outdir.fitted_file("placement.npz"))
    assert data is not None
    model = load_placement(fitted["out"], check=False)
    assert model.neighbours == 5 and len(model.train_X) == 200
    new, _ = blobs(2, 40)
    again = place(load_placement(fitted["out"], check=False), new)
    for key, value in place(model, new).items():
        np.testing.assert_array_equal(value, again[key])


def test_new_rows_take_the_saved_clusters_and_positions(fitted):
    model = load_placement(fitted["out"], check=False)
    new, _ = blobs(1, 330)
    new = new[300:] + np.random.default_rng(9).normal(scale=0.1, size=(30, 6)).astype(np.float32)
    placed = place(model, new)
    Z_new = apply_steps(model.steps, new)
    assert placed["kmeans"].tolist() == fitted["km"].predict(Z_new).tolist()
    np.testing.assert_allclose(
        np.column_stack([placed["pca_x"], placed["pca_y"]]),
        fitted["pca"].transform(Z_new),
        atol=1e-4,
    )
    assert (placed["hdbscan"] == placed["kmeans"]).mean() > 0.9
    centre_of = {c: fitted["umap"][fitted["km"].labels_ == c].mean(0) for c in range(3)}
    for c, x, y in zip(placed["kmeans"], placed["umap_x"], placed["umap_y"], strict=True):
        assert np.linalg.norm(np.array([x, y]) - centre_of[c]) < 3.0


def test_placing_training_rows_keeps_their_clusters(fitted):
    model = load_placement(fitted["out"], check=False)
    placed = place(model, fitted["X"][:50])
    assert placed["kmeans"].tolist() == fitted["km"].labels_[:50].tolist()
    assert load_placement(str(fitted["out"]) + "-missing") is None
