"""Render report.html in headless Chromium, to check that the maps really draw (tests, bench).

Chromium runs isolated: a fresh profile folder, no network services, no GPU; the report is
self-contained, so a page that draws here draws on a machine without internet.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium binary on PATH (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="soundclust-chromium-") as profile:
        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def screenshot(
    html_path: str | Path,
    png_path: str | Path,
    width: int = 1400,
    height: int = 1000,
    budget_ms: int = 15000,
    timeout: float = 120,
) -> Path:
    """Screenshot of the page after its scripts ran (virtual time budget) → PNG path."""
    png_path = Path(png_path)
    url = Path(html_path).resolve().as_uri()
    proc = _run(
        [
            f"--window-size={width},{height}",
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={png_path}",
            url,
        ],
        timeout,
    )
    if not png_path.exists():
        raise RuntimeError(f"chromium wrote no screenshot: {proc.stderr.strip()[-500:]}")
    return png_path


def dump_dom(html_path: str | Path, budget_ms: int = 15000, timeout: float = 120) -> str:
    """The DOM after the page's scripts ran (plotly adds its ``main-svg`` elements)."""
    url = Path(html_path).resolve().as_uri()
    proc = _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout)
    return proc.stdout


def non_white_fraction(png_path: str | Path, box: tuple[int, int, int, int] | None = None) -> float:
    """Fraction of pixels (in ``box`` = left, top, right, bottom) that are not near-white."""
    from PIL import Image

    img = Image.open(png_path).convert("RGB")
    if box is not None:
        img = img.crop(box)
    a = np.asarray(img, dtype=np.int16)
    return float((a.min(axis=2) < 235).mean())


def distinct_colors(png_path: str | Path, box: tuple[int, int, int, int] | None = None) -> int:
    """Number of distinct RGB colours (a drawn scatter map has many; a blank page has one)."""
    from PIL import Image

    img = Image.open(png_path).convert("RGB")
    if box is not None:
        img = img.crop(box)
    a = np.asarray(img).reshape(-1, 3)
    return int(len(np.unique(a, axis=0)))


def marker_pixels(
    png_path: str | Path, color: str, box: tuple[int, int, int, int] | None = None, tol: int = 12
) -> int:
    """Pixels within ``tol`` of a ``#rrggbb`` colour (the first cluster's marker colour)."""
    from PIL import Image

    img = Image.open(png_path).convert("RGB")
    if box is not None:
        img = img.crop(box)
    a = np.asarray(img, dtype=np.int16)
    rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(a - rgb).max(axis=2) <= tol).sum())
