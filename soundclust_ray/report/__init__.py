"""The self-contained HTML report of a run (plotly maps, summaries, run info)."""

from soundclust_ray.report.html import write_report

__all__ = ["write_report"]
