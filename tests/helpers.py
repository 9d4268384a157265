"""Small helpers shared by the tests (not part of the package)."""

from __future__ import annotations

from dataclasses import replace

from soundclust_ray.config import AnalysisConfig


def config_with(cfg: AnalysisConfig | None = None, **changes) -> AnalysisConfig:
    """A copy of ``cfg`` (or the defaults) with fields replaced; None values are ignored."""
    cfg = cfg or AnalysisConfig()
    return replace(cfg, **{k: v for k, v in changes.items() if v is not None})
