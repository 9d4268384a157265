"""report.html: metadata can never inject markup, and the maps really draw in a browser."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from soundclust_ray.report import render
from soundclust_ray.report.html import esc, render_report, script_json, write_report

EVIL = "<script>alert(1)</script>"
EVIL_ATTR = '"><img src=x onerror=alert(2)>'


def fake_run(n_per=20, seed=0):
    """A clusters table, metrics and summaries as analyze() writes them (no fitting needed)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [8, 0], [4, 7]], float)
    xy = np.vstack([c + rng.normal(size=(n_per, 2)) for c in centres])
    k = np.repeat(np.arange(3), n_per)
    hdb = k.copy()
    hdb[::7] = -1
    genre = np.array(["rock", EVIL_ATTR, "jazz"])[k]
    n = len(k)
    clusters = pd.DataFrame(
        {
            "track_id": [f"g{k[i]}/t{i:03d}.wav" for i in range(n)],
            "path": [f"/x/{i}.wav" for i in range(n)],
            "genre": genre,
            "title": [EVIL] * n,
            "year": 1990 + np.arange(n),
            "kmeans": k.astype(np.int32),
            "hdbscan": hdb.astype(np.int32),
            "umap_x": xy[:, 0],
            "umap_y": xy[:, 1],
            "pca_x": -xy[:, 1],
            "pca_y": xy[:, 0],
            "top_tags": [f"{EVIL} (0.90)"] * n,
        }
    )
    metrics = {
        "n_tracks": n,
        "n_failed": 1,
        "k": 3,
        "label_col": "genre",
        "silhouette": 0.7,
        "nmi": 1.0,
        "ari": 1.0,
        "cluster_sizes": {"kmeans": {"0": 20, "1": 20, "2": 20}, "hdbscan": {"-1": 9, "0": 17}},
        "contingency": {
            "labels": ["jazz", "rock", EVIL_ATTR],
            "clusters": ["0", "1", "2"],
            "counts": [[0, 0, 20], [20, 0, 0], [0, 20, 0]],
        },
        "k_selection": {
            "curve": [
                {"k": 2, "silhouette": 0.5, "inertia": 9.0},
                {"k": 3, "silhouette": 0.7, "inertia": 3.0},
            ],
            "best": 3,
        },
        "embedding_sanity": {
            "before": {"n_nan": 0, "mean_pairwise_cosine": 0.94, "std_pairwise_cosine": 0.07},
            "after": {"n_nan": 0, "mean_pairwise_cosine": 0.02, "std_pairwise_cosine": 0.39},
        },
        "seconds_per_stage": {"pipeline": 10.0, "kmeans": 0.5, EVIL: 1.0},
        "matrix": {"matrix": "features", "scaling": "standard"},
        "notes": [EVIL],
        "config": {"k": 3},
    }
    summaries = {
        "kmeans": [
            {
                "cluster": 0,
                "size": 20,
                "numeric_means": {"year": 2000.0},
                "top_values": {"genre": [[EVIL_ATTR, 20]], "title": [[EVIL, 20]]},
                "nearest_tracks": [{"track_id": EVIL, "distance": 0.1}],
                "top_tags": [[EVIL, 0.9]],
            }
        ],
        "hdbscan": [],
    }
    errors = pd.DataFrame(
        {"track_id": [EVIL], "stage": ["decode"], "error_type": ["X"], "message": [EVIL]}
    )
    return clusters, metrics, summaries, errors


def test_script_json_cannot_close_the_script_element():
    text = script_json({"a": EVIL, "b": "x & y", "c": "\u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": EVIL, "b": "x & y", "c": "\u2028"}
    assert esc(EVIL) == "&lt;script&gt;alert(1)&lt;/script&gt;" and esc(None) == ""


def test_metadata_text_is_escaped_everywhere():
    clusters, metrics, summaries, errors = fake_run()
    page = render_report(metrics, clusters, summaries, {"inputs": [EVIL]}, errors)
    assert EVIL not in page and "<img" not in page
    # the only script elements are the report's own three (plotly.js, data, drawing code)
    assert page.count("<script") == 3 and page.count("</script>") == 3
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # tables show the text, escaped
    data = re.search(r'<script type="application/json" id=report-data>(.*?)</script>', page, re.S)
    blob = json.loads(data.group(1))
    assert all("<script>" not in h for h in blob["hover"])
    assert "&lt;script&gt;" in blob["hover"][0] and "<b>g0/t000.wav</b>" in blob["hover"][0]
    assert set(blob["colorings"]) >= {"kmeans", "hdbscan", "meta:genre"}
    assert blob["colorings"]["hdbscan"]["categories"][-1] == "noise (-1)"
    assert blob["colorings"]["hdbscan"]["colors"][-1] == "#7f7f7f"
    assert "meta:title" not in blob["colorings"]  # one distinct value: nothing to colour by


def test_self_contained_and_sampled(tmp_path):
    clusters, metrics, summaries, _ = fake_run(n_per=200)
    page = render_report(metrics, clusters, summaries, max_points=100)
    assert "<script src" not in page and "<link" not in page
    ours = re.sub(r"<script>.*?</script>", "", page, count=1, flags=re.S)  # drop plotly.js itself
    assert "http://" not in ours and "https://" not in ours
    assert "Maps show a seeded sample of 100 of 600 tracks" in page
    path = write_report(str(tmp_path), metrics, clusters, summaries)
    assert path.endswith("report.html") and (tmp_path / "report.html").stat().st_size > 1_000_000


def test_missing_projection_shows_a_reason():
    clusters, metrics, summaries, _ = fake_run()
    clusters["umap_x"] = np.nan
    clusters["umap_y"] = np.nan
    metrics["umap"] = {"skipped": "UMAP needs at least 3 rows, got 2"}
    page = render_report(metrics, clusters, summaries)
    blob = json.loads(re.search(r"id=report-data>(.*?)</script>", page, re.S).group(1))
    umap = blob["projections"][0]
    assert umap["x"] is None and "at least 3 rows" in umap["reason"]


needs_chromium = pytest.mark.skipif(
    render.find_chromium() is None, reason="no chromium binary on PATH (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    clusters, metrics, summaries, _ = fake_run()
    write_report(str(tmp), metrics, clusters, summaries)
    return tmp / "report.html", clusters


@needs_chromium
def test_maps_draw_in_headless_chromium(rendered):
    html_path, clusters = rendered
    dom = render.dump_dom(html_path)
    assert 'class="main-svg"' in dom, "plotly drew no svg"
    for map_id, nxt in (("map-umap", "map-pca"), ("map-pca", "fig-sizes")):
        part = dom[dom.index(f'id="{map_id}"') : dom.index(f'id="{nxt}"')]
        assert part.count('class="point"') == len(clusters), map_id
    for fig in ("fig-sizes", "fig-kcurve", "fig-contingency", "fig-sanity", "fig-timings"):
        part = dom[dom.index(f'id="{fig}"') :][:3000]
        assert 'class="main-svg"' in part, fig


@needs_chromium
def test_screenshot_of_the_maps_is_not_blank(rendered, tmp_path):
    pytest.importorskip("PIL", reason="pillow is needed to read the screenshot's pixels")
    html_path, _ = rendered
    png = render.screenshot(html_path, tmp_path / "shot.png", width=1400, height=900)
    # the two maps sit below the header; drawn maps have coloured markers, blank ones do not
    box = (0, 150, 1400, 800)
    assert render.distinct_colors(png, box) > 50
    assert render.non_white_fraction(png, box) > 0.02
    # markers are drawn at opacity 0.85 over the grey plot background, hence the tolerance
    assert render.marker_pixels(png, "#2E91E5", box, tol=40) > 200
