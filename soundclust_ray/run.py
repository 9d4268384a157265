"""The one orchestrator of a run, the same for every source.

guard OUT → list the inputs (the source's manifest) → start Ray if the source needs it →
compute the products → the source's post-steps → the analysis → the error-rate check.
``cli.py`` parses arguments and prints; jobs call :func:`execute` the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from soundclust_ray import outdir
from soundclust_ray.config import AnalysisConfig, RunConfig
from soundclust_ray.errors import UserError
from soundclust_ray.runinfo import error_rate_exceeded
from soundclust_ray.sources import get_source
from soundclust_ray.sources.base import RunOptions, Say


@dataclass
class RunOutcome:
    """What a run did: its run info, the analysis metrics (None when skipped), time, verdict."""

    info: dict
    metrics: dict | None
    seconds: float
    failure: str | None
    """The error-rate message when more tracks failed than allowed, else None."""


def guard_out(opts: RunOptions) -> None:
    """Make OUT usable before any work: with ``--overwrite``, empty it first."""
    if opts.overwrite:
        fs, base = outdir.resolve(opts.out)
        fs.delete_dir_contents(base, missing_dir_ok=True)


def run_analysis(out: str, cfg: AnalysisConfig, label_col: str | None, progress: bool) -> dict:
    """The driver analysis; its option errors (unknown label, backend, matrix) are user errors."""
    from soundclust_ray.analysis.driver import analyze

    try:
        return analyze(out, cfg, label_col=label_col, progress=progress)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from exc


def execute(source_name: str, opts: RunOptions, cfg: RunConfig, say: Say) -> RunOutcome:
    """Run ``opts.input_path`` of kind ``source_name`` into ``opts.out``, analysis included."""
    import dataclasses

    started = time.perf_counter()
    source = get_source(source_name)
    cfg = dataclasses.replace(cfg, source=source.name)
    guard_out(opts)
    listing = source.list_inputs(opts, cfg, say)
    if source.needs_ray:
        from soundclust_ray.ray_env import init_ray

        init_ray(num_cpus=opts.num_cpus, quiet=opts.quiet)
    info = source.compute(listing, opts, cfg, say)
    source.post_steps(opts, cfg, info, say)
    metrics = None
    if not opts.no_analysis:
        metrics = run_analysis(opts.out, cfg.analysis, opts.label_col, progress=not opts.quiet)
    seconds = time.perf_counter() - started
    return RunOutcome(info, metrics, seconds, error_rate_exceeded(info, cfg))
