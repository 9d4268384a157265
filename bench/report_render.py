"""Render OUT/report.html in headless Chromium and check that the maps drew (not a blank page).

Independent of the test suite and of CI: ``.venv/bin/python bench/report_render.py [OUT]``.
Without OUT it writes a report for 2,000 synthetic tracks in 8 clusters first. It times the
page's load-and-draw against a plain page of the same size without plotly (the naive
reference), counts the points plotly drew in each map (DOM after load), and checks the
screenshot's map area for the first cluster's marker colour. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from soundclust_ray.report.html import write_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import browser as render  # noqa: E402


def synthetic_out(folder: Path, n: int = 2000, k: int = 8) -> None:
    """A clusters table and metrics like analyze() writes, without fitting anything."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(-10, 10, size=(k, 2))
    labels = rng.integers(0, k, size=n)
    xy = centres[labels] + rng.normal(size=(n, 2))
    clusters = pd.DataFrame(
        {
            "track_id": [f"genre{labels[i]}/track{i:05d}.mp3" for i in range(n)],
            "path": [f"/music/{i}.mp3" for i in range(n)],
            "genre": [f"g{v}" for v in labels],
            "kmeans": labels.astype(np.int32),
            "hdbscan": np.where(rng.random(n) < 0.1, -1, labels).astype(np.int32),
            "umap_x": xy[:, 0],
            "umap_y": xy[:, 1],
            "pca_x": xy[:, 1],
            "pca_y": -xy[:, 0],
        }
    )
    sizes = {str(c): int((labels == c).sum()) for c in range(k)}
    metrics = {
        "n_tracks": n,
        "n_failed": 0,
        "k": k,
        "label_col": "genre",
        "cluster_sizes": {"kmeans": sizes},
        "seconds_per_stage": {"kmeans": 1.0},
        "matrix": {"matrix": "synthetic"},
    }
    write_report(str(folder), metrics, clusters, {"kmeans": [], "hdbscan": []})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", nargs="?", help="an OUT folder with report.html (default: synthetic)")
    a = p.parse_args()
    if render.find_chromium() is None:
        print("no chromium binary on PATH: apt-get install -y chromium")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="report-render-"))
    out = Path(a.out) if a.out else tmp
    if not a.out:
        synthetic_out(out)
    page = out / "report.html"
    html_text = page.read_text(encoding="utf-8")
    plain = tmp / "plain.html"
    plain.write_text(
        "<!DOCTYPE html><html><body><pre>" + "x" * len(html_text) + "</pre></body></html>"
    )

    t0 = time.perf_counter()
    render.screenshot(plain, tmp / "plain.png")
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    png = render.screenshot(page, tmp / "report.png", width=1400, height=900)
    t_report = time.perf_counter() - t0
    dom = render.dump_dom(page)
    ok = True
    counts = {}
    for map_id, nxt in (("map-umap", "map-pca"), ("map-pca", "fig-sizes")):
        start = dom.find(f'id="{map_id}"')
        part = dom[start : dom.find(f'id="{nxt}"', start)] if start >= 0 else ""
        counts[map_id] = part.count('class="point"')
        ok &= counts[map_id] > 0 or 'class="empty"' in part
    print(f"report: {page} ({page.stat().st_size / 2**20:.1f} MiB)")
    print(f"points drawn: {counts}")
    print(
        f"load + draw + screenshot {t_report:.1f} s vs plain page of the same size "
        f"{t_plain:.1f} s ({t_report / max(t_plain, 1e-3):.1f}x)"
    )
    try:
        box = (0, 150, 1400, 800)
        colours = render.distinct_colors(png, box)
        markers = render.marker_pixels(png, "#2E91E5", box, tol=40)
        print(
            f"screenshot {png}: {colours} distinct colours, {markers} first-cluster marker pixels"
        )
        ok &= colours > 50 and markers > 100
    except ImportError:
        print(f"screenshot {png} (install pillow to check its pixels)")
    print("maps drew" if ok else "FAILED: the maps did not draw")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
