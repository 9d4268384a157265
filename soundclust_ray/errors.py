"""Errors a user can cause, importable from every layer (nothing here imports the package).

The CLI turns :class:`UserError` into one line, ``error: <message>``, and exit code 2; every
layer below it raises this instead of printing, so no module needs to import the CLI.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2
"""Exit code of a user error (bad option, missing input, OUT that cannot be used)."""

EXIT_TOO_MANY_FAILURES = 3
"""Exit code when more than ``--max-error-rate`` of the tracks failed."""


class UserError(Exception):
    """A mistake in the command or its inputs: reported as one line, exit code 2."""


class AccountingError(RuntimeError):
    """A manifest row that is in neither a product's shards nor errors.parquet (or, after the
    analysis, neither clustered nor failed): a bug in soundclust, never a user error."""


class ConfigMismatchError(UserError):
    """OUT holds results of another configuration; rerun with ``--overwrite`` or a new OUT."""
