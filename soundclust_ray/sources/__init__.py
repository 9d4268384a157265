"""Input kinds as plug-ins: each module implements :class:`sources.base.Source`.

A new input kind is one module and one line in :data:`SOURCES`.
"""

from __future__ import annotations

import importlib

from soundclust_ray.errors import UserError

SOURCES = {
    "audio": "soundclust_ray.sources.audio",
    "msd": "soundclust_ray.sources.msd",
    "tabular": "soundclust_ray.sources.tabular",
}
"""Source name (``--source``) → module exposing ``SOURCE``; imported only when used."""


def get_source(name: str):
    """The plug-in of a source name; UserError for an unknown one."""
    if name not in SOURCES:
        raise UserError(f"unknown --source {name!r} (one of {', '.join(SOURCES)})")
    return importlib.import_module(SOURCES[name]).SOURCE
