"""The records of a run in OUT: the manifest, the consolidated errors, run.json, config hashes.

Ray-free: every source (audio, MSD, tabular) ends its products with :func:`finish_run`, so
run.json has one schema whoever wrote it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from soundclust_ray import outdir, shards, versions
from soundclust_ray.config import AnalysisConfig, RunConfig, config_hash, to_dict
from soundclust_ray.errors import AccountingError, ConfigMismatchError


@dataclass
class ProductResult:
    """What one product's pipeline did in this run."""

    product: str
    n_todo: int = 0
    n_skipped: int = 0
    n_ok: int = 0
    n_failed: int = 0
    seconds: float = 0.0
    nodes: Counter = field(default_factory=Counter)

    def add(self, other: ProductResult, skipped: int = 0) -> None:
        """Fold one chunk's result into this total (sources that stream their manifest)."""
        self.n_todo += other.n_todo
        self.n_skipped += skipped
        self.n_ok += other.n_ok
        self.n_failed += other.n_failed
        self.seconds += other.seconds
        self.nodes.update(other.nodes)


def product_settings(cfg: RunConfig, product: str) -> dict:
    """The settings a product's values depend on, and its code version (``versions``): the
    decode settings and the family's (or backend's) own, nothing else, so another family's
    options or the analysis options never invalidate it."""
    audio = to_dict(cfg.audio)
    if product == outdir.FEATURES:
        return {"msd": to_dict(cfg.msd), "version": versions.MSD_VERSION}
    if product == outdir.FEATURE_CHUNKS:
        classic = to_dict(cfg.features.classic)
        return {"audio": audio, "classic": classic, "version": versions.CLASSIC_CHUNKS_VERSION}
    kind, name = product.split("/", 1)
    if kind == outdir.FEATURES:
        family = to_dict(getattr(cfg.features, name))
        return {"audio": audio, name: family, "version": versions.FEATURE_FAMILY_VERSIONS[name]}
    if name == "tabular":
        return {"tabular": to_dict(cfg.tabular), "version": versions.EMBEDDING_VERSIONS[name]}
    if name == "clap":
        clap = to_dict(cfg.embed.clap)
        return {"audio": audio, name: clap, "version": versions.EMBEDDING_VERSIONS[name]}
    musicnn = to_dict(cfg.embed.musicnn)
    if name != "musicnn":  # msd_vgg & co. name their own weights; --musicnn-model is not theirs
        musicnn.pop("model")
    version = versions.EMBEDDING_VERSIONS["musicnn"]
    return {"audio": audio, "backend": name, "musicnn": musicnn, "version": version}


def product_hash(cfg: RunConfig, product: str) -> str:
    """Hash of :func:`product_settings`: what a product's shards record and a rerun compares."""
    parts = product_settings(cfg, product)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed_setting(old: dict, new: dict, prefix: str = "") -> str | None:
    """The first setting (dotted path, ``old → new``) that differs between two settings dicts."""
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = changed_setting(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key} {a} → {b}"
    return None


def check_out_dir(
    out: str, cfg: RunConfig, products: list[str], recompute: tuple[str, ...] = ()
) -> None:
    """Refuse to extend a product of OUT whose shards were made with other settings, naming
    the product and the first changed setting (run.json's record); ``recompute`` products are
    rebuilt from scratch, so theirs may differ."""
    recorded = read_run_info(out).get(PRODUCT_SETTINGS_KEY, {})
    for product in products:
        if product in recompute:
            continue
        expected = product_hash(cfg, product)
        found = shards.shard_config_hashes(out, product)
        if not found or found == {expected}:
            continue
        what = None
        if product in recorded:
            now = json.loads(json.dumps(product_settings(cfg, product), default=str))
            what = changed_setting(recorded[product], now)
        what = what or f"its settings (hash {', '.join(sorted(found))} ≠ {expected})"
        raise ConfigMismatchError(
            f"{product} in {out} was computed with other settings: {what}; rerun with "
            f"--recompute {product} to recompute it alone, or use a new --out"
        )


PRODUCT_SETTINGS_KEY = "product_settings"
"""run.json's record of each product's settings (what its hash covers), to name a change."""


def _listing(fs: pafs.FileSystem, folder: str) -> list[pafs.FileInfo]:
    return fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))


def products_in_out(out: str) -> list[str]:
    """Every product with at least one committed shard in OUT."""
    found = shards.feature_products(out)
    found += [outdir.FEATURE_CHUNKS] if shards.list_shards(out, outdir.FEATURE_CHUNKS) else []
    fs, base = outdir.resolve(out)
    for info in _listing(fs, outdir.join(base, outdir.EMBEDDINGS)):
        product = outdir.embeddings_product(info.base_name)
        if shards.list_shards(out, product):
            found.append(product)
    return found


def staging_products(out: str) -> list[str]:
    """The ``--recompute`` staging products of OUT holding shards (a recompute in progress)."""
    return [outdir.staging_product(p) for p in products_in_out(outdir.join(out, outdir.RECOMPUTE))]


def _invalid_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    invalid = manifest[manifest["invalid_reason"] != ""]
    return pd.DataFrame(
        {
            "track_id": invalid["track_id"],
            "path": invalid["path"],
            "stage": "manifest",
            "error_type": "InvalidManifestRow",
            "message": invalid["invalid_reason"],
        }
    )


def _product_errors(out: str, product: str, files: list[str], wanted: set) -> pd.DataFrame | None:
    """A product's latest error per track that is still wanted and has no shard row."""
    fs, _ = outdir.resolve(out)
    prefix = product.replace("/", "-") + "-"
    tables = [
        pq.read_table(p, filesystem=fs) for p in files if p.rsplit("/", 1)[-1].startswith(prefix)
    ]
    if not tables:
        return None
    done = set(shards.read_column(out, product).to_pylist())
    errs = pa.concat_tables(tables).to_pandas()
    errs = errs[~errs["track_id"].isin(done) & errs["track_id"].isin(wanted)]
    return errs.drop_duplicates("track_id", keep="last")


def one_row_per_track(errors: pd.DataFrame) -> pd.DataFrame:
    """Collapse a track that failed in several products (a file that does not decode fails the
    features and every embedding) into one row: its stages and distinct messages joined by '; '."""

    def joined(values: pd.Series) -> str:
        return "; ".join(dict.fromkeys(values))

    ordered = errors.sort_values(["track_id", "stage"], kind="stable")
    merged = ordered.groupby("track_id", sort=True, as_index=False).agg(
        {"path": "first", "stage": joined, "error_type": "first", "message": joined}
    )
    return merged[list(errors.columns)].reset_index(drop=True)


def consolidate_errors(out: str, manifest: pd.DataFrame, products: list[str]) -> pd.DataFrame:
    """OUT/errors.parquet: invalid manifest rows + each product's latest error per missing track,
    one row per track."""
    fs, base = outdir.resolve(out)
    frames = [_invalid_rows(manifest)] if (manifest["invalid_reason"] != "").any() else []
    files = sorted(
        i.path
        for i in _listing(fs, outdir.join(base, outdir.ERRORS_DIR))
        if i.base_name.endswith(".parquet") and not outdir.is_temporary(i.base_name)
    )
    wanted = set(manifest["track_id"])
    for product in products:
        errs = _product_errors(out, product, files, wanted)
        if errs is not None:
            frames.append(errs)
    columns = list(shards.ERROR_COLUMNS)
    table = (
        pd.concat(frames, ignore_index=True)[columns]
        if frames
        else pd.DataFrame({c: pd.Series(dtype=str) for c in columns})
    )
    table = one_row_per_track(table)
    arrow = pa.Table.from_pandas(table, schema=shards.ERROR_SCHEMA, preserve_index=False)
    outdir.write_table(out, outdir.ERRORS, arrow)
    return table


def write_manifest(out: str, manifest: pd.DataFrame) -> None:
    """OUT/manifest.parquet: every input row with its metadata, the driver's join table."""
    table = pa.Table.from_pandas(manifest.drop(columns=["invalid_reason"]), preserve_index=False)
    outdir.write_table(out, outdir.MANIFEST, table)


def read_run_info(out: str) -> dict:
    """OUT/run.json as a dict ({} when absent)."""
    return outdir.read_json(out, outdir.RUN)


def write_run_info(out: str, info: dict) -> None:
    """OUT/run.json, atomically: config, hashes, inputs, counts and timings of the latest run."""
    outdir.write_json(out, outdir.RUN, info)


def product_entry(r: ProductResult, names: dict[str, str]) -> dict:
    """run.json's record of one product."""
    return {
        "todo": r.n_todo,
        "skipped": r.n_skipped,
        "written": r.n_ok,
        "failed": r.n_failed,
        "seconds": round(r.seconds, 3),
        "tracks_per_node": {names.get(k, k): v for k, v in r.nodes.items()},
    }


def finish_run(
    out: str,
    manifest: pd.DataFrame,
    cfg: RunConfig,
    results: list[ProductResult],
    timings: dict[str, float],
    input_desc: str,
    extra: dict | None = None,
) -> dict:
    """Consolidate errors and write OUT/run.json; returns the run info.

    Products of earlier runs on the same OUT (e.g. ``jobs/embed.py`` after
    ``jobs/extract_features.py``) keep their entries and their errors. ``extra`` adds a
    source's own record (e.g. the tabular column report).
    """
    from soundclust_ray.ray_env import node_names

    ran = [r.product for r in results]
    products = list(dict.fromkeys([*ran, *products_in_out(out)]))
    errors = consolidate_errors(out, manifest, products)
    names = node_names()
    previous = read_run_info(out)
    earlier = {p: v for p, v in previous.get("products", {}).items() if p in products}
    info = {
        "input": input_desc,
        "source": cfg.source,
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
        "product_hashes": {
            **previous.get("product_hashes", {}),
            **{p: product_hash(cfg, p) for p in ran},
        },
        PRODUCT_SETTINGS_KEY: {
            **previous.get(PRODUCT_SETTINGS_KEY, {}),
            **{p: product_settings(cfg, p) for p in ran},
        },
        "products": {**earlier, **{r.product: product_entry(r, names) for r in results}},
        "n_input_rows": len(manifest),
        "n_failed": int(errors["track_id"].nunique()),
        "timings": {**previous.get("timings", {}), **{k: round(v, 3) for k, v in timings.items()}},
        **{k: previous[k] for k in (ANALYSIS_OPTIONS_KEY,) if k in previous},
        **(extra or {}),
    }
    write_run_info(out, info)
    return info


def error_rate_exceeded(info: dict, cfg: RunConfig) -> str | None:
    """What to print when more tracks failed than ``cfg.max_error_rate`` allows, else None."""
    n_rows = max(1, info["n_input_rows"])
    if info["n_failed"] / n_rows <= cfg.max_error_rate:
        return None
    return (
        f"{info['n_failed']} of {n_rows} tracks failed, more than --max-error-rate "
        f"{cfg.max_error_rate:.0%}"
    )


ANALYSIS_OPTIONS_KEY = "analysis_options"
"""run.json's record of the last analysis options (AnalysisConfig + label column)."""


def record_analysis_options(
    out: str, cfg: AnalysisConfig, label_col: str | None, inputs_key: str | None = None
) -> None:
    """Remember in run.json what this OUT was analysed with, for the next ``analyze``, and on
    which inputs (``run.analysis_inputs_key``; None: not analysed yet)."""
    info = read_run_info(out)
    if info:
        record = {"config": to_dict(cfg), "label_col": label_col, "inputs_key": inputs_key}
        info[ANALYSIS_OPTIONS_KEY] = record
        write_run_info(out, info)


def last_analysis_options(out: str) -> dict | None:
    """{"config": AnalysisConfig as a dict, "label_col": ...} of OUT's last analysis: run.json's
    record, else an older OUT's metrics.json, else the run's own analysis config; None."""
    info = read_run_info(out)
    if ANALYSIS_OPTIONS_KEY in info:
        return info[ANALYSIS_OPTIONS_KEY]
    metrics = outdir.read_json(out, outdir.METRICS)
    if isinstance(metrics.get("config"), dict):
        return {"config": metrics["config"], "label_col": metrics.get("label_col")}
    analysis = info.get("config", {}).get("analysis")
    return {"config": analysis, "label_col": None} if isinstance(analysis, dict) else None


def check_accounting(out: str, products: list[str], analysed: bool) -> None:
    """Every manifest row is in each product's shards or in errors.parquet and, after an
    analysis, clustered or failed; anything else is an AccountingError (a bug, not a warning)."""
    manifest = outdir.read_table(out, outdir.MANIFEST, ["track_id"])
    if manifest is None:
        return
    ids = set(manifest.column(0).to_pylist())
    errors = outdir.read_table(out, outdir.ERRORS, ["track_id"])
    ids -= set(errors.column(0).to_pylist()) if errors is not None else set()
    places = {p: set(shards.read_column(out, p).to_pylist()) for p in products}
    if analysed and outdir.exists(out, outdir.CLUSTERS):
        clusters = outdir.read_table(out, outdir.CLUSTERS, ["track_id"])
        places["the clusters"] = set(clusters.column(0).to_pylist())
    for place, found in places.items():
        lost = sorted(ids - found)
        if lost:
            raise AccountingError(
                f"{len(lost)} manifest rows are neither in {place} nor in {outdir.ERRORS} "
                f"(e.g. {lost[0]!r}): a bug in soundclust, please report it"
            )
