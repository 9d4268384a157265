"""The analysis's independent jobs as Ray tasks, so a cluster's cores share them (issue #17).

``analysis/`` stays Ray-free: it takes any ``Executor``; this one lives outside it. The job
function (a ``functools.partial`` that holds the gathered matrix) is put in the object store
once per ``map``, and every task reads it from there instead of a copy per task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import ray

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
