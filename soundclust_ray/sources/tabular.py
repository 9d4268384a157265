"""Spotify-style audio-feature tables → seed 003's weighted similarity vectors.

:func:`tabular_vectors` reproduces seed 003 value for value: StandardScaler on the audio features
(float64, then float32), the seed's weights, key/mode/explicit as raw floats and a standardized
year. Columns the table lacks are reported and skipped, keeping the remaining weights aligned.

:func:`run_tabular` writes a run's outputs with pyarrow directly rather than through Ray Data:
the scaler needs whole-column statistics, and on the 1.7M-row benchmark table (``bench/sources.py``)
a multi-threaded ``pyarrow`` read plus numpy is faster than starting Ray and shuffling blocks.
"""

from __future__ import annotations

import difflib
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sklearn.preprocessing import StandardScaler

from soundclust_ray import outdir, shards
from soundclust_ray.config import RunConfig, TabularConfig, check_tabular_role
from soundclust_ray.errors import UserError
from soundclust_ray.runinfo import product_hash
from soundclust_ray.sources.base import Listing, RunOptions, Say

BACKEND = "tabular"
PRODUCT = outdir.embeddings_product(BACKEND)
TRUE_STRINGS = ("true", "t", "yes", "y", "1")
FALSE_STRINGS = ("false", "f", "no", "n", "0")


def read_table(path_or_uri: str, header_only: bool = False) -> pa.Table | pa.Schema:
    """A CSV or Parquet table (local path or URI), read multi-threaded by pyarrow; with
    ``header_only`` its schema alone (Parquet's footer, or a CSV's first block).

    Raises ValueError for other extensions or unreadable files (one clear line for the CLI).
    """
    fs, path = outdir.resolve(path_or_uri)
    lower = path.lower()
    try:
        if lower.endswith((".parquet", ".pq")):
            if header_only:
                return pq.read_schema(path, filesystem=fs)
            return pq.read_table(path, filesystem=fs)
        if lower.endswith((".csv", ".csv.gz", ".tsv")):
            parse = pacsv.ParseOptions(delimiter="\t" if lower.endswith(".tsv") else ",")
            with fs.open_input_stream(path) as f:
                if header_only:
                    return pacsv.open_csv(f, parse_options=parse).schema
                return pacsv.read_csv(f, parse_options=parse)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValueError(f"{path_or_uri}: cannot read table ({exc})") from exc
    raise ValueError(f"{path_or_uri}: expected a .csv, .tsv or .parquet table")


def _as_arrow(table: object) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    return pa.Table.from_pandas(table, preserve_index=False)


def _float_column(column: pa.ChunkedArray) -> np.ndarray:
    """A column as float64; booleans and 'true'/'false' strings become 1/0, other text NaN."""
    if pa.types.is_boolean(column.type):
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(column))
        as_bool = pc.is_in(lowered, pa.array(TRUE_STRINGS))
        is_false = pc.is_in(lowered, pa.array(FALSE_STRINGS))
        out = np.full(len(column), np.nan)
        out[as_bool.to_numpy(zero_copy_only=False)] = 1.0
        out[is_false.to_numpy(zero_copy_only=False)] = 0.0
        return out
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)


def _year_column(table: pa.Table, cfg: TabularConfig) -> tuple[np.ndarray | None, str | None]:
    """The year as float64 and where it came from; derived from a release date when needed."""
    if cfg.year_column in table.column_names:
        return _float_column(table.column(cfg.year_column)), cfg.year_column
    if cfg.release_date_column in table.column_names:
        text = pc.cast(table.column(cfg.release_date_column), pa.string())
        head = pc.utf8_slice_codeunits(text, 0, 4)
        valid = pc.match_substring_regex(head, r"^\d{4}$")
        head = pc.if_else(valid, head, pa.scalar(None, pa.string()))
        return pc.cast(head, pa.float64()).to_numpy(zero_copy_only=False), cfg.release_date_column
    return None, None


def _column_list(columns: list[str], shown: int = 12) -> str:
    """The first ``shown`` column names, then how many more: error lines stay one screen line."""
    more = len(columns) - shown
    return ", ".join(columns[:shown]) + (f", … ({more} more)" if more > 0 else "")


def id_column(columns: list[str], cfg: TabularConfig) -> str:
    """The first configured id column present; ValueError naming the candidates otherwise."""
    for name in cfg.id_columns:
        if name in columns:
            return name
    raise ValueError(
        f"table has no id column (one of {', '.join(cfg.id_columns)}); "
        f"columns: {_column_list(columns)}"
    )


def _standardize(X: np.ndarray) -> np.ndarray:
    """StandardScaler exactly as the seed calls it (float64 in, float32 out)."""
    return StandardScaler().fit_transform(X).astype("float32")


def tabular_vectors(
    table: object, cfg: TabularConfig | RunConfig
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Seed 003's vectors of a pandas DataFrame or Arrow table: (track_ids, X float32, report).

    Columns: the present audio features standardized and weighted, then the present categorical
    columns as floats, then the standardized year (``year``, or the first 4 characters of
    ``release_date``). Missing values are set to 0 after scaling (the column mean) and counted in
    the report. Raises ValueError when the id column, every audio feature, or a
    ``required_columns`` entry is missing.
    """
    ids, X, report = _vectors(table, cfg)
    return ids.to_numpy(zero_copy_only=False).astype(object), X, report


def check_column_roles(columns: list[str], cfg: TabularConfig) -> None:
    """ValueError, one line, for a ``cfg.columns`` mapping (``--column role=name``) with an
    unknown role (the roles listed), a column the table lacks (close names listed), or a role
    or column given twice."""
    roles, used = [], []
    for role, column in cfg.columns:
        given = f"--column {role}={column}"
        try:
            check_tabular_role(role, cfg.roles)
        except ValueError as exc:
            raise ValueError(f"{given}: {exc}") from None
        if column not in columns:
            close = difflib.get_close_matches(column, columns, n=3, cutoff=0.6)
            hint = (
                f"close names: {', '.join(close)}" if close else f"columns: {_column_list(columns)}"
            )
            raise ValueError(f"{given}: the table has no column {column!r}; {hint}")
        if role in roles or column in used:
            twice = f"role {role!r}" if role in roles else f"column {column!r}"
            raise ValueError(f"{given}: {twice} is given by two --column options")
        roles.append(role)
        used.append(column)


def apply_column_aliases(table: pa.Table, cfg: TabularConfig) -> tuple[pa.Table, dict]:
    """The table with ``cfg.columns`` (the user's ``--column role=name``) renamed to their role,
    then ``cfg.column_aliases`` (when the role's own name is absent), and {table column: role}
    for the run to say which column filled which role.

    A column already named as a role the user gave to another column is set aside under
    ``<role> (replaced by <column>)``, so it fills nothing."""
    check_column_roles(table.column_names, cfg)
    names, renamed = list(table.column_names), {}
    for role, column in cfg.columns:
        if column == role:
            continue
        if role in names:
            names[names.index(role)] = f"{role} (replaced by {column})"
        names[names.index(column)] = role
        renamed[column] = role
    for alias, role in cfg.column_aliases:
        if alias in names and role not in names:
            names[names.index(alias)] = role
            renamed[alias] = role
    return (table.rename_columns(names) if renamed else table), renamed


def _vectors(table: object, cfg: TabularConfig | RunConfig) -> tuple[pa.Array, np.ndarray, dict]:
    """:func:`tabular_vectors` with the ids left as an Arrow array (no Python strings)."""
    if isinstance(cfg, RunConfig):
        cfg = cfg.tabular
    if len(cfg.weights) != len(cfg.audio_features):
        raise ValueError("TabularConfig.weights needs one weight per audio feature")
    table, renamed = apply_column_aliases(_as_arrow(table), cfg)
    columns = table.column_names
    id_name = id_column(columns, cfg)
    missing_required = [c for c in cfg.required_columns if c not in columns]
    if missing_required:
        raise ValueError(f"table lacks required column(s): {', '.join(missing_required)}")
    present = [(c, w) for c, w in zip(cfg.audio_features, cfg.weights, strict=True) if c in columns]
    if not present:
        raise ValueError(
            f"table has none of the audio feature columns ({', '.join(cfg.audio_features)}); "
            f"columns: {_column_list(columns)}"
        )
    n = table.num_rows
    if n == 0:
        raise ValueError("table has no rows")
    audio = np.empty((n, len(present)), dtype=np.float64, order="F")
    for j, (name, _) in enumerate(present):
        audio[:, j] = _float_column(table.column(name))
    weights = np.array([w for _, w in present], dtype="float32")
    blocks = [_standardize(audio) * weights]
    categorical = [c for c in cfg.categorical if c in columns]
    if categorical:
        cat = np.empty((n, len(categorical)), dtype=np.float32)
        for j, name in enumerate(categorical):
            cat[:, j] = _float_column(table.column(name))
        blocks.append(cat)
    year, year_source = _year_column(table, cfg)
    if year is not None:
        blocks.append(_standardize(year.reshape(-1, 1)))
    X = np.concatenate(blocks, axis=1).astype("float32", copy=False)
    nan = np.isnan(X)
    n_missing = int(nan.sum())
    if n_missing:
        X[nan] = 0.0
    ids = table.column(id_name)
    if not pa.types.is_string(ids.type):
        ids = pc.cast(ids, pa.string())
    dims = [name for name, _ in present] + categorical + (["year"] if year is not None else [])
    report = {
        "rows": n,
        "dims": X.shape[1],
        "id_column": id_name,
        "columns": dims,
        "weights": [round(float(w), 6) for w in weights],
        "missing_optional": [c for c in (*cfg.audio_features, *cfg.categorical) if c not in columns]
        + ([] if year is not None else [cfg.year_column]),
        "year_from": year_source,
        "renamed_columns": renamed,
        "missing_values_filled": n_missing,
        "null_ids": int(ids.null_count),
    }
    ids, report["duplicate_ids"] = unique_ids(ids.combine_chunks())
    return ids, X, report


def unique_ids(ids: pa.Array) -> tuple[pa.Array, int]:
    """Every row its own id: a repeated id keeps its first row and the later rows become
    ``<id>#dup<k>`` (as in an audio manifest, never colliding with a real id), so each row
    of the table is one clustered track. Returns the ids and how many were renamed."""
    import pandas as pd

    from soundclust_ray.manifest import fresh_id

    series = pd.Series(ids.to_pandas(), dtype=object)
    repeated = series.duplicated(keep="first") & series.notna()
    if not repeated.any():
        return ids, 0
    taken = set(series.dropna())
    series[repeated] = [fresh_id(v, taken) for v in series[repeated]]
    return pa.array(series, type=pa.string()), int(repeated.sum())


def write_id_to_index(out: str, track_ids: np.ndarray | pa.Array) -> int:
    """OUT/id_to_index.json: id → row (seed 003; a repeated id maps to its last row).

    Returns the number of distinct ids.
    """
    mapping = {tid: i for i, tid in enumerate(track_ids.tolist())}
    outdir.write_bytes(out, outdir.ID_TO_INDEX, json.dumps(mapping).encode())
    return len(mapping)


def run_tabular(table_path_or_uri: str, out: str, cfg: RunConfig) -> dict:
    """A whole tabular run's outputs: manifest, embedding parts and id_to_index.json.

    Writes ``OUT/manifest.parquet`` (track_id, path = the table, every column that is not a
    vector input, plus ``year``), ``OUT/embeddings/tabular/part-*.parquet`` (track_id + embedding
    fixed_size_list<float32>[d]; previous parts are replaced) and ``OUT/id_to_index.json``.
    Returns counts, the column report and seconds per step.
    """
    tab = cfg.tabular
    t0 = time.perf_counter()
    table = read_table(table_path_or_uri)
    t_read = time.perf_counter()
    ids, X, report = _vectors(table, tab)
    t_vec = time.perf_counter()

    fs, base = outdir.resolve(out)
    fs.create_dir(base, recursive=True)
    vector_inputs = {*tab.audio_features, *tab.categorical}
    meta_cols = [c for c in table.column_names if c not in vector_inputs]
    path_col = pc.cast(
        pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(len(ids), dtype=np.int32)), pa.array([str(table_path_or_uri)])
        ),
        pa.string(),
    )
    manifest = pa.table(
        {"track_id": ids, "path": path_col, **{c: table.column(c) for c in meta_cols}}
    )
    if "year" not in manifest.column_names and report["year_from"]:
        year, _ = _year_column(table, tab)
        manifest = manifest.append_column("year", pa.array(year))
    outdir.write_table_atomic(fs, outdir.join(base, outdir.MANIFEST), manifest)

    folder = outdir.join(base, PRODUCT)
    fs.delete_dir_contents(folder, missing_dir_ok=True)
    digest = product_hash(cfg, PRODUCT)
    n_parts = 0
    for start in range(0, len(ids), tab.shard_rows):
        stop = min(start + tab.shard_rows, len(ids))
        part = pa.table(
            {
                "track_id": ids.slice(start, stop - start),
                shards.EMBEDDING_COLUMN: shards.embedding_array(X[start:stop]),
            }
        )
        path = outdir.join(folder, f"{outdir.SHARD_PREFIX}{n_parts:05d}.parquet")
        outdir.write_table_atomic(fs, path, part, digest)
        n_parts += 1
    write_id_to_index(out, ids)
    t_write = time.perf_counter()
    return {
        **report,
        "parts": n_parts,
        "seconds": {
            "read": round(t_read - t0, 3),
            "vectors": round(t_vec - t_read, 3),
            "write": round(t_write - t_vec, 3),
        },
    }


class TabularSource:
    """A CSV/Parquet table of Spotify-style audio features: vectors on the driver, no Ray."""

    name = "tabular"
    needs_ray = False

    def list_inputs(self, opts: RunOptions, cfg: RunConfig, say: Say) -> Listing:
        """The table is its own listing; it is read once, in :meth:`compute`. Its header is
        read here so that a bad ``--column`` is one line before any work."""
        try:
            check_column_roles(read_table(opts.input_path, True).names, cfg.tabular)
        except (ValueError, FileNotFoundError) as exc:
            raise UserError(str(exc)) from exc
        return Listing(n_rows=0, path=opts.input_path)

    def products(self, cfg: RunConfig) -> list[str]:
        return [PRODUCT]

    def pending(self, listing: Listing, opts: RunOptions, cfg: RunConfig) -> int | None:
        """The table is computed on the driver; nothing to gain from knowing it early."""
        return None

    def stage_modules(self, cfg: RunConfig) -> tuple[str, ...]:
        """No stages: the table is computed on the driver."""
        return ()

    def compute(self, listing: Listing, opts: RunOptions, cfg: RunConfig, say: Say) -> dict:
        from soundclust_ray.runinfo import ProductResult, finish_run

        try:
            counts = run_tabular(listing.path, opts.out, cfg)
        except (ValueError, FileNotFoundError) as exc:
            raise UserError(str(exc)) from exc
        missing = ", ".join(counts["missing_optional"]) or "none"
        say(
            f"{counts['rows']} rows of {listing.path} → {counts['dims']}-d vectors "
            f"(id column {counts['id_column']!r}; missing optional columns: {missing})"
        )
        for column, role in counts.get("renamed_columns", {}).items():
            say(f"column {column!r} fills the {role!r} role")
        seconds = sum(counts["seconds"].values())
        result = ProductResult(PRODUCT, n_todo=counts["rows"], n_ok=counts["rows"])
        result.seconds = seconds
        result.nodes.update({"driver": counts["rows"]})
        manifest = outdir.read_table(opts.out, outdir.MANIFEST, ["track_id", "path"]).to_pandas()
        manifest["invalid_reason"] = ""
        extra = {"tabular": counts}
        return finish_run(opts.out, manifest, cfg, [result], counts["seconds"], listing.path, extra)

    def post_steps(self, opts: RunOptions, cfg: RunConfig, info: dict, say: Say) -> None:
        """Tabular runs have no step after the vectors."""


SOURCE = TabularSource()
