"""Small helpers shared by the tests (not part of the package)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

from soundclust_ray.config import AnalysisConfig


def config_with(cfg: AnalysisConfig | None = None, **changes) -> AnalysisConfig:
    """A copy of ``cfg`` (or the defaults) with fields replaced; None values are ignored."""
    cfg = cfg or AnalysisConfig()
    return replace(cfg, **{k: v for k, v in changes.items() if v is not None})


RAY_PROBE = (
    "import sys; from soundclust_ray.cli import main; code = main(sys.argv[1:]); "
    "ray = sys.modules.get('ray'); print('ray imported:', ray is not None); "
    "print('ray started:', bool(ray and ray.is_initialized())); sys.exit(code)"
)


def soundclust_probed(args: list[str]) -> str:
    """``soundclust`` in a fresh process; its stdout ends with whether Ray was imported and
    whether it was started there (exit 0 required)."""
    done = subprocess.run(
        [sys.executable, "-c", RAY_PROBE, *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
