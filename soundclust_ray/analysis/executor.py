"""How the analysis runs its independent jobs (OOF folds, the fits of k selection).

Each job is one call ``fn(item)`` that reads only its arguments, so the jobs can run in any
order or place. ``SerialExecutor`` runs them here, one after another; a Ray executor (issue
#17) can spread the same calls over a cluster without the analysis knowing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Maps a function over independent items and returns the results in the items' order."""

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]: ...


class SerialExecutor:
    """Runs every job in this process, in order: the default, and the reference for the others."""

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        return [fn(item) for item in items]


SERIAL = SerialExecutor()
