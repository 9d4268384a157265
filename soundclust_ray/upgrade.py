"""OUT format 1 → 2 in place: the one feature product split into one product per family.

Format 1 (and an OUT from before the marker) kept every feature family in ``OUT/features``
under one config hash over all of ``FeaturesConfig``. Format 2 gives each family its own
``features/<family>`` product and hash (``runinfo.product_settings``). An old OUT is upgraded
only when its run.json's config reproduces the hash its shards and run.json recorded, by the
old formula (:func:`legacy_product_hash`): then the config that made the shards is known, and
each shard is rewritten under the new layout and hashes. Otherwise it is refused in one line;
it is never read under a guessed config.
"""

from __future__ import annotations

import hashlib
import json
import re

import pyarrow.parquet as pq

from soundclust_ray import outdir, shards
from soundclust_ray.config import RunConfig, config_hash, from_dict, to_dict
from soundclust_ray.errors import UserError
from soundclust_ray.outguard import MARKER_FORMAT as FORMAT
from soundclust_ray.outguard import write_marker
from soundclust_ray.runinfo import (
    PRODUCT_SETTINGS_KEY,
    product_hash,
    product_settings,
    read_run_info,
    write_run_info,
)
from soundclust_ray.sources.base import Say

LEGACY_FEATURE_ERRORS = re.compile(r"^features-[0-9a-f]{16}\.parquet$")
"""Error shards of format 1's single feature product (``features-<16 hex>.parquet``)."""


def legacy_product_hash(cfg: RunConfig, product: str) -> str:
    """Format 1's config hash of a product (the old ``runinfo.product_hash``, kept verbatim)."""
    if product in (outdir.FEATURES, outdir.FEATURE_CHUNKS):
        parts = {
            "features": to_dict(cfg.features),
            "audio": to_dict(cfg.audio),
            "source": cfg.source,
        }
        if cfg.source == "msd":
            parts = {"msd": to_dict(cfg.msd), "source": cfg.source}
    elif product == outdir.embeddings_product("tabular"):
        return config_hash(cfg.tabular)
    else:
        backend = product.split("/", 1)[1]
        embed = to_dict(cfg.embed)
        parts = {"backend": backend, "cfg": embed.get(backend, {}), "audio": to_dict(cfg.audio)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def legacy_products(out: str) -> list[str]:
    """Format 1 products of OUT holding shards: ``features``, ``features_chunks``, embeddings."""
    from soundclust_ray.runinfo import products_in_out

    return [p for p in products_in_out(out) if not p.startswith(outdir.FEATURES + "/")]


def check_reproduces(out: str, info: dict, products: list[str]) -> RunConfig:
    """The config that made ``products``' shards, read from run.json; UserError when run.json
    does not reproduce every product's recorded hash and its shards' hashes."""
    config = info.get("config")
    cfg = from_dict(RunConfig, config) if isinstance(config, dict) else None
    for product in products:
        found = shards.shard_config_hashes(out, product)
        expected = legacy_product_hash(cfg, product) if cfg is not None else None
        recorded = (info.get("product_hashes") or {}).get(product)
        if expected is None or recorded != expected or found != {expected}:
            raise UserError(
                f"--out {out} was written by an older soundclust and its run.json does not "
                f"reproduce the settings of its {product} shards: use a new --out, or "
                "--overwrite to recompute it"
            )
    return cfg


def _split_feature_shards(out: str, cfg: RunConfig) -> list[str]:
    """Each ``features/part-*`` shard → one shard per family under ``features/<family>/`` (same
    name: an interrupted upgrade redoes it identically), then the old shard goes."""
    fs, base = outdir.resolve(out)
    families = list(cfg.features.families)
    for path in shards.list_shards(out, outdir.FEATURES):
        table = pq.read_table(path, filesystem=fs)
        name = path.rsplit("/", 1)[-1]
        for family in families:
            columns = [c for c in table.column_names if c.startswith(f"{family}__")]
            product = outdir.feature_product(family)
            part = table.select(["track_id", *columns]).replace_schema_metadata(None)
            target = outdir.join(base, product, name)
            outdir.write_table_atomic(fs, target, part, product_hash(cfg, product))
        fs.delete_file(path)
    errors = outdir.join(base, outdir.ERRORS_DIR)
    for name in outdir.list_files(out, outdir.ERRORS_DIR):
        if LEGACY_FEATURE_ERRORS.match(name):
            table = pq.read_table(outdir.join(errors, name), filesystem=fs)
            for family in families:
                renamed = f"features-{family}-{name.removeprefix('features-')}"
                outdir.write_table_atomic(fs, outdir.join(errors, renamed), table)
            fs.delete_file(outdir.join(errors, name))
    return [outdir.feature_product(f) for f in families]


def _rehash_shards(out: str, cfg: RunConfig, product: str) -> None:
    """Rewrite a product's shards in place with its format 2 hash (values unchanged)."""
    fs, _ = outdir.resolve(out)
    for path in shards.list_shards(out, product):
        table = pq.read_table(path, filesystem=fs)
        outdir.write_table_atomic(fs, path, table, product_hash(cfg, product))


def _upgraded_run_info(info: dict, cfg: RunConfig, renamed: dict[str, list[str]]) -> dict:
    """run.json with format 2 product names, hashes and settings (``renamed``: old product →
    the products it became)."""

    def spread(record: dict) -> dict:
        result = {}
        for key, value in record.items():
            for new in renamed.get(key, [key]):
                result[new] = value
        return result

    products = [new for news in renamed.values() for new in news]
    return {
        **info,
        "product_hashes": {
            **{k: v for k, v in info.get("product_hashes", {}).items() if k not in renamed},
            **{p: product_hash(cfg, p) for p in products},
        },
        PRODUCT_SETTINGS_KEY: {p: product_settings(cfg, p) for p in products},
        "products": spread(info.get("products", {})),
    }


def upgrade_out(out: str, marker: dict, say: Say) -> dict:
    """Bring an OUT of an older format to :data:`FORMAT` in place (one line said) or refuse it
    (UserError, before any work); returns the marker as written."""
    if int(marker.get("format", 1)) >= FORMAT:
        return marker
    products = legacy_products(out)
    if products:
        info = read_run_info(out)
        cfg = check_reproduces(out, info, products)
        renamed = {}
        for product in products:
            if product == outdir.FEATURES and cfg.source != "msd":
                renamed[product] = _split_feature_shards(out, cfg)
            else:
                _rehash_shards(out, cfg, product)
                renamed[product] = [product]
        write_run_info(out, _upgraded_run_info(info, cfg, renamed))
        done = ", ".join(f"{old} → {', '.join(new)}" for old, new in renamed.items())
        say(f"upgraded {out} to format {FORMAT} (one product per feature family): {done}")
    return write_marker(out, {**marker, "format": FORMAT})
