"""report.html: metadata can never inject markup, and the maps really draw in a browser."""

from __future__ import annotations

import base64
import gzip
import html
import json
import re
from dataclasses import replace
from pathlib import Path

import browser as render
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from soundclust_ray.config import AnalysisConfig
from soundclust_ray.report import bundle, player
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
    cfg = replace(AnalysisConfig(), report_max_points=100)
    page = render_report(metrics, clusters, summaries, cfg=cfg)
    assert "<script src" not in page and "<link" not in page
    assert "http://" not in page and "https://" not in page  # the bundle is base64: no URLs
    assert "Maps show a seeded sample of 100 of 600 tracks" in page
    path = write_report(str(tmp_path), metrics, clusters, summaries)
    assert path.endswith("report.html") and (tmp_path / "report.html").exists()


def test_plotly_travels_gzipped_and_inflates_to_the_installed_bundle(tmp_path):
    import plotly.offline

    full = plotly.offline.get_plotlyjs().encode()
    packed = bundle.plotly_gzip_base64()
    assert gzip.decompress(base64.b64decode(packed)) == full
    clusters, metrics, summaries, _ = fake_run()
    write_report(str(tmp_path), metrics, clusters, summaries)
    size = (tmp_path / "report.html").stat().st_size
    assert size < 0.5 * len(full), (size, len(full))  # was len(full) + the data: 4.8 MB
    again = tmp_path / "again"
    write_report(str(again), metrics, clusters, summaries)
    assert bundle.plotly_gzip_base64() in (again / "report.html").read_text()


def test_audio_links_are_relative_to_out_and_percent_encoded(tmp_path):
    out = tmp_path / "out"
    odd = tmp_path / "music" / "a b#1?x%y é" / "javascript:alert(1).mp3"
    links = player.audio_links(
        [str(odd), f"file://{tmp_path}/music/c.wav", "s3://bucket/x.mp3", None, ""], str(out)
    )
    assert links[0] == "../music/a%20b%231%3Fx%25y%20%C3%A9/javascript%3Aalert%281%29.mp3"
    assert links[1] == "../music/c.wav"
    assert links[2:] == [None, None, None]
    assert player.audio_links([str(odd)], "s3://bucket/out") == [None]


def test_neighbours_equal_brute_force():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    xy = X[:, :2].astype(float)
    xy[5] = np.nan
    rows, dists = player.nearest_on_map(xy, 4)
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    np.fill_diagonal(d, np.inf)
    d[np.isnan(d)] = np.inf
    for i in (0, 17, 39):
        assert rows[i] == list(np.argsort(d[i], kind="stable")[:4])
        assert np.allclose(dists[i], np.sort(d[i])[:4], atol=1e-4)
    assert rows[5] == [] and all(5 not in r for r in rows)
    rows, dists = player.nearest_in_matrix(X, 3)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = U @ U.T
    np.fill_diagonal(S, -np.inf)
    for i in (0, 21):
        assert rows[i] == list(np.argsort(-S[i], kind="stable")[:3])
        assert np.allclose(dists[i], 1 - np.sort(S[i])[::-1][:3], atol=1e-4)


def test_missing_projection_shows_a_reason():
    clusters, metrics, summaries, _ = fake_run()
    clusters["umap_x"] = np.nan
    clusters["umap_y"] = np.nan
    metrics["umap"] = {"skipped": "UMAP needs at least 3 rows, got 2"}
    page = render_report(metrics, clusters, summaries)
    blob = json.loads(re.search(r"id=report-data>(.*?)</script>", page, re.S).group(1))
    umap = blob["projections"][0]
    assert umap["x"] is None and "at least 3 rows" in umap["reason"]
    assert blob["player"]["neighbours"]["space"] == "distance on the PCA map"


needs_chromium = pytest.mark.skipif(
    render.find_chromium() is None, reason="no chromium binary on PATH (apt-get install chromium)"
)


PROBE_JS = """(async function(){
  const wait = ms => new Promise(r => setTimeout(r, ms));
  const svgs = () => document.querySelectorAll('.main-svg').length;
  for (let t = 0; t < 400 && svgs() < 14; t++) await wait(50);
  await wait(300);
  const out = {overlaps: [], clipped: [], bars: 0};
  document.querySelectorAll('.js-plotly-plot').forEach(gd => {
    const box = gd.getBoundingClientRect(), bar = gd.querySelector('.modebar');
    const mb = bar ? bar.getBoundingClientRect() : null;
    if (mb && mb.width) out.bars += 1;
    gd.querySelectorAll('svg text').forEach(t => {
      const r = t.getBoundingClientRect(), s = t.textContent.trim();
      if (!r.width || !s) return;
      if (mb && r.left < mb.right && r.right > mb.left && r.top < mb.bottom && r.bottom > mb.top)
        out.overlaps.push(gd.id + ': ' + s);
      if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 ||
          r.bottom > box.bottom + 1) out.clipped.push(gd.id + ': ' + s);
    });
  });
  const texts = sel => Array.from(document.querySelectorAll(sel)).map(t => t.textContent);
  out.cells = texts('#fig-contingency .heatmap-label');
  out.y2ticks = texts('#fig-kcurve .y2tick text');
  const gd = document.getElementById('map-umap');
  gd.emit('plotly_click', {points: [{customdata: 0}]});
  const audio = document.getElementById('audio');
  for (let t = 0; t < 100 && audio.readyState < 1 && !audio.error; t++) await wait(50);
  out.audio = {src: audio.src, duration: audio.duration, error: audio.error && audio.error.code,
    playing: document.getElementById('now-playing').textContent,
    neighbours: texts('#neighbours button'),
    ringed: gd.data[gd.data.length - 1].x.length};
  const pre = document.createElement('pre');
  pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();"""
"""Measures the drawn page from inside (text boxes against the modebar and the figure), then
clicks the first point of the UMAP map through plotly's own event and waits for its audio."""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A report in OUT whose tracks are real WAV files beside it (odd names included), and the
    DOM of that report with the probe appended, after Chromium ran both scripts."""
    tmp = tmp_path_factory.mktemp("report")
    clusters, metrics, summaries, _ = fake_run()
    tone = (0.1 * np.sin(np.arange(8000) / 10)).astype(np.float32)
    paths = []
    for i in range(len(clusters)):
        path = tmp / "music" / f"a b#{i} é.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, tone, 8000, subtype="PCM_16")
        paths.append(str(path))
    clusters["path"] = paths
    out = tmp / "out"
    write_report(str(out), metrics, clusters, summaries)
    page = (out / "report.html").read_text(encoding="utf-8")
    probe = out / "probe.html"
    probe.write_text(page.replace("</body>", f"<script>{PROBE_JS}</script></body>"), "utf-8")
    dom = render.dump_dom(probe)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe did not finish: " + dom[-2000:]
    return out / "report.html", clusters, dom, json.loads(html.unescape(found.group(1)))


@needs_chromium
def test_maps_draw_in_headless_chromium(rendered):
    _, clusters, dom, _ = rendered
    assert 'class="main-svg"' in dom, "plotly drew no svg"
    for map_id, nxt in (("map-umap", "map-pca"), ("map-pca", "player-panel")):
        part = dom[dom.index(f'id="{map_id}"') : dom.index(f'id="{nxt}"')]
        # a point of a track carries its row (customdata); the selection ring's do not
        assert part.count('class="point plotly-customdata"') == len(clusters), map_id
    for fig in ("fig-sizes", "fig-kcurve", "fig-contingency", "fig-sanity", "fig-timings"):
        part = dom[dom.index(f'id="{fig}"') :][:3000]
        assert 'class="main-svg"' in part, fig


@needs_chromium
def test_no_text_under_the_toolbar_or_cut_off(rendered):
    probe = rendered[3]
    assert probe["bars"] == 7  # every figure has its modebar, measured
    assert probe["overlaps"] == [] and probe["clipped"] == []


@needs_chromium
def test_heatmap_cells_show_counts_and_inertia_ticks_are_round(rendered):
    probe = rendered[3]
    assert sorted(probe["cells"]) == ["20", "20", "20"]  # non-zero cells only
    ticks = [float(t.replace("\u2212", "-")) for t in probe["y2ticks"]]
    steps = np.diff(ticks)
    assert len(ticks) >= 3 and np.allclose(steps, steps[0])
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert round(mantissa, 6) in (1.0, 2.0, 2.5, 5.0), probe["y2ticks"]


@needs_chromium
def test_click_plays_the_track_and_lists_its_neighbours(rendered):
    report, clusters, _, probe = rendered
    audio = probe["audio"]
    assert audio["error"] is None and audio["duration"] == pytest.approx(1.0, abs=0.01)
    assert Path(report.parent, "..", "music", "a b#0 é.wav").resolve().as_uri() == audio["src"]
    assert audio["playing"].startswith("g0/t000.wav")
    xy = clusters[["umap_x", "umap_y"]].to_numpy()
    order = np.argsort(np.linalg.norm(xy - xy[0], axis=1), kind="stable")[1:11]
    assert audio["neighbours"] == clusters["track_id"].iloc[order].tolist()
    assert audio["ringed"] == 11


@needs_chromium
def test_screenshot_of_the_maps_is_not_blank(rendered, tmp_path):
    pytest.importorskip("PIL", reason="pillow is needed to read the screenshot's pixels")
    html_path = rendered[0]
    png = render.screenshot(html_path, tmp_path / "shot.png", width=1400, height=900)
    # the two maps sit below the header; drawn maps have coloured markers, blank ones do not
    box = (0, 150, 1400, 800)
    assert render.distinct_colors(png, box) > 50
    assert render.non_white_fraction(png, box) > 0.02
    # markers are drawn at opacity 0.85 over the grey plot background, hence the tolerance
    assert render.marker_pixels(png, "#2E91E5", box, tol=40) > 200


def test_columns_with_spaces_or_odd_characters_keep_their_values_in_the_hover():
    clusters, metrics, summaries, errors = fake_run()
    clusters = clusters.assign(**{"release year": 1977, "genre/sub": "dub", "2nd": "x"})
    page = render_report(metrics, clusters, summaries, {}, errors)
    data = re.search(r'<script type="application/json" id=report-data>(.*?)</script>', page, re.S)
    hover = json.loads(data.group(1))["hover"][0]
    assert "release year: 1977" in hover and "genre/sub: dub" in hover and "2nd: x" in hover


def test_the_hdbscan_warning_is_in_the_report_notes():
    clusters, metrics, summaries, errors = fake_run()
    metrics = {**metrics, "hdbscan": {"warning": "HDBSCAN found 0 clusters, 100% noise"}}
    page = render_report(metrics, clusters, summaries, {}, errors)
    assert "<li><b>HDBSCAN:</b> HDBSCAN found 0 clusters, 100% noise</li>" in page


def test_duplicates_section_lists_pairs_with_both_tracks_escaped():
    from soundclust_ray.report.html import duplicates_html

    clusters, metrics, summaries, _ = fake_run()
    clusters["duration_sec"] = 30.0 + 0.5 * np.arange(len(clusters))
    ids = clusters["track_id"].tolist()
    pairs = pd.DataFrame(
        {"track_id_a": [ids[0], ids[2]], "track_id_b": [ids[1], ids[3]], "cosine": [0.985, 0.999]}
    )
    info = {"n_pairs": 2, "n_tracks": 4, "threshold": 0.98, "matrix": EVIL}
    text = duplicates_html(info, pairs, clusters, limit=1)
    assert "2 pairs (4 tracks) at cosine ≥ 0.980" in text and "the 1 closest" in text
    assert "0.9990" in text and "0.9850" not in text  # the closest pair first, limit kept
    assert esc(ids[2]) in text and esc(ids[3]) in text and "duration_sec: 31.0" in text
    assert EVIL not in text and esc(EVIL) in text and "/x/2.wav" in text
    assert "title:" not in text  # the same for every track: says nothing about a pair
    none = duplicates_html({**info, "n_pairs": 0}, pairs.iloc[:0], clusters, 5)
    assert "No pair of tracks at cosine ≥ 0.980" in none
    off = duplicates_html({"skipped": "turned off (duplicates=False)"}, None, clusters, 5)
    assert "skipped: turned off (duplicates=False)" in off
    page = render_report({**metrics, "duplicates": info}, clusters, summaries, duplicates=pairs)
    assert "<h2>Near-duplicates</h2>" in page and "0.9990" in page and EVIL not in page


def test_summaries_show_min_max_and_noise_apart():
    clusters, metrics, summaries, _ = fake_run()
    noise = {"cluster": -1, "size": 9, "numeric_means": {"year": 1995.0}, "top_values": {}}
    summaries["kmeans"][0].update(numeric_min={"year": 1990.0}, numeric_max={"year": 2009.0})
    page = render_report(metrics, clusters, {**summaries, "hdbscan_noise": noise})
    assert "year: 2,000 (1,990–2,009)" in page
    assert "Noise (-1), not a cluster: 9 tracks" in page
    quiet = render_report(metrics, clusters, {**summaries, "hdbscan_noise": None})
    assert "HDBSCAN put every track in a cluster" in quiet
    off = {**metrics, "hdbscan": {"skipped": "turned off (hdbscan=False)"}}
    page = render_report(off, clusters, {**summaries, "hdbscan_noise": noise})
    assert "HDBSCAN skipped: turned off" in page and "Noise (-1), not a cluster" not in page


def test_hover_always_shows_the_header_facts():
    from soundclust_ray.report.html import MAX_HOVER_FIELDS, _hover_texts

    many = {f"meta{i}": [f"v{i}"] for i in range(MAX_HOVER_FIELDS + 2)}
    df = pd.DataFrame(
        {"track_id": ["t"], **many, "duration_sec": [29.5], "sample_rate": [22050], "channels": [2]}
    )
    [text] = _hover_texts(df.assign(kmeans=[0], hdbscan=[-1]))
    assert "duration_sec: 29.5" in text and "sample_rate: 22050" in text and "channels: 2" in text
    assert f"meta{MAX_HOVER_FIELDS - 1}: " in text and f"meta{MAX_HOVER_FIELDS}: " not in text
