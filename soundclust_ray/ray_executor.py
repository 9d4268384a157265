"""The analysis's independent jobs as Ray tasks, so a cluster's cores share them (issue #17).

``analysis/`` stays Ray-free: it takes any ``Executor``; this one lives outside it. The job
function (a ``functools.partial`` that holds the gathered matrix) is put in the object store
once per ``map``, and every task reads it from there instead of a copy per task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import ray

from soundclust_ray.analysis.executor import SERIAL, Executor
from soundclust_ray.config import RAY_ANALYSIS_MIN_ROWS

T = TypeVar("T")
R = TypeVar("R")


@ray.remote
def _call(fn: Callable[[T], R], item: T) -> R:
    """One job: Ray resolves ``fn`` from the object store before the call."""
    return fn(item)


class RayExecutor:
    """Runs ``fn(item)`` for every item as a Ray task; results in the items' order."""

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        items = list(items)
        if len(items) <= 1:
            return [fn(item) for item in items]
        fn_ref = ray.put(fn)
        return ray.get([_call.remote(fn_ref, item) for item in items])


def analysis_uses_ray(n_rows: int) -> bool:
    """True when an analysis of ``n_rows`` tracks is big enough to send its jobs to Ray
    (config.RAY_ANALYSIS_MIN_ROWS): the one rule, for the executor and for a run deciding
    whether it may stop its Ray before the analysis."""
    return n_rows >= RAY_ANALYSIS_MIN_ROWS


def analysis_executor(n_rows: int) -> Executor:
    """The executor of an analysis of ``n_rows`` tracks: Ray tasks when this process has Ray up
    (a ``soundclust run`` that computed something, or a job on a cluster) with more than one
    CPU and the analysis is big enough to pay for putting the matrix in the object store
    (config.RAY_ANALYSIS_MIN_ROWS); else the serial executor (``soundclust analyze`` alone
    never starts Ray for it)."""
    if not analysis_uses_ray(n_rows) or not ray.is_initialized():
        return SERIAL
    return RayExecutor() if ray.cluster_resources().get("CPU", 0) > 1 else SERIAL
