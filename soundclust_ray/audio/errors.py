"""Errors a track can raise; stages turn them into rows of OUT/errors.parquet."""


class TrackError(Exception):
    """A per-track failure that must become an error row, never stop the run."""


class AudioDecodeError(TrackError):
    """The file could not be decoded into usable audio."""
