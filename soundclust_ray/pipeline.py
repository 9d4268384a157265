"""Assemble and execute the Ray Data pipeline of a run: manifest → stages → shards (+ errors).

Each *product* (``features``, ``embeddings/<backend>``) is one streaming Ray Data pipeline:
read the manifest rows still to do → compute stage(s) → shard writer. The writer is a task
that writes each batch as one Parquet shard atomically and returns a tiny summary row per
track, so the driver holds summaries, never features. Resume is a set difference on the
``track_id`` column of committed shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from soundclust_ray import shards
from soundclust_ray.config import RunConfig, config_hash, to_dict
from soundclust_ray.stages.base import ERROR_FIELDS, NODE_FIELD, Resources

log = logging.getLogger("soundclust_ray")

FEATURES = "features"
FEATURE_CHUNKS = "features_chunks"
RUN_FILE = "run.json"
MAX_BLOCKS_IN_FLIGHT_PER_ACTOR = 2
MANIFEST_FILE = "manifest.parquet"
ERRORS_FILE = "errors.parquet"
ERRORS_DIR = "errors"


class ConfigMismatchError(RuntimeError):
    """OUT holds shards of another configuration; refusing to mix them."""


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


def init_ray(num_cpus: int | None = None, quiet: bool = False) -> None:
    """Connect to RAY_ADDRESS when set, else start an embedded local Ray using all cores."""
    import ray

    if quiet:
        logging.getLogger("ray").setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    kwargs: dict = {"log_to_driver": not quiet, "logging_level": logging.WARNING}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            object_store_memory=local_object_store_bytes(),
            **kwargs,
        )
    configure_data_context(quiet)


LOCAL_OBJECT_STORE_FRACTION = 0.2
LOCAL_OBJECT_STORE_MAX_BYTES = 4 * 1024**3


def local_object_store_bytes() -> int:
    """Object store of an embedded local Ray: 20 % of RAM, at most 4 GiB.

    Ray's own default (30 % of RAM) is sized for shuffles; this pipeline streams small blocks,
    and Ray Data's backpressure keeps in-flight blocks within a share of this budget, so a
    bounded store bounds the run's memory however large the corpus.
    """
    import psutil

    return int(
        min(
            LOCAL_OBJECT_STORE_MAX_BYTES,
            LOCAL_OBJECT_STORE_FRACTION * psutil.virtual_memory().total,
        )
    )


def configure_data_context(quiet: bool) -> None:
    """Progress bars on unless quiet; a bounded object store budget for streaming."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not quiet
    ctx.enable_operator_progress_bars = not quiet
    ctx.print_on_execution_start = not quiet
    ctx.execution_options.preserve_order = False


def cluster_cpus() -> int:
    """Whole CPUs of the connected cluster (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def block_rows(n_rows: int, batch_size: int, workers: int) -> int:
    """Rows per input block: about 8 blocks per worker, so the last blocks finish together
    (a track is seconds of work; coarse blocks leave workers idle at the end of a run)."""
    return max(batch_size, min(256, math.ceil(n_rows / max(1, 8 * workers))))


def tracks_dataset(tracks: pd.DataFrame, batch_size: int):
    """A Ray Dataset of (track_id, path) rows, cut into blocks sized by ``block_rows``."""
    import ray.data

    rows = block_rows(len(tracks), batch_size, cluster_cpus())
    frames = [tracks.iloc[i : i + rows][["track_id", "path"]] for i in range(0, len(tracks), rows)]
    return ray.data.from_pandas(frames)


def product_hash(cfg: RunConfig, product: str) -> str:
    """Hash of the config parts that determine a product's values (analysis options excluded)."""
    if product in (FEATURES, FEATURE_CHUNKS):
        parts = {
            "features": to_dict(cfg.features),
            "audio": to_dict(cfg.audio),
            "source": cfg.source,
        }
        if cfg.source == "msd":
            parts = {"msd": to_dict(cfg.msd), "source": cfg.source}
    else:
        backend = product.split("/", 1)[1]
        embed = to_dict(cfg.embed)
        parts = {"backend": backend, "cfg": embed.get(backend, {}), "audio": to_dict(cfg.audio)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_out_dir(out: str, cfg: RunConfig, products: list[str], overwrite: bool) -> None:
    """Refuse to extend OUT whose shards were made by another config, unless overwriting."""
    fs, base = shards.resolve(out)
    for product in products:
        expected = product_hash(cfg, product)
        found = shards.shard_config_hashes(out, product)
        if found and found != {expected}:
            if not overwrite:
                raise ConfigMismatchError(
                    f"{shards.join(out, product)} holds shards of another configuration "
                    f"({', '.join(sorted(found))} ≠ {expected}); "
                    "rerun with --overwrite or use a new --out"
                )
            fs.delete_dir_contents(shards.join(base, product), missing_dir_ok=True)
            for info in fs.get_file_info(pafs_selector(shards.join(base, ERRORS_DIR))):
                if info.base_name.startswith(product.replace("/", "-") + "-"):
                    fs.delete_file(info.path)


def pafs_selector(path: str):
    import pyarrow.fs as pafs

    return pafs.FileSelector(path, allow_not_found=True)


class ShardWriter:
    """Write one batch of stage output as a feature/embedding shard plus an error shard.

    Returns one summary row per input track (track_id, ok, node_id) so the driver can count
    without holding any feature values.
    """

    def __init__(
        self, out: str, product: str, config_hash: str, meta_columns: tuple[str, ...] = ()
    ):
        self.out = out
        self.product = product
        self.config_hash = config_hash
        self.meta_columns = meta_columns

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fs, base = shards.resolve(self.out)
        error_type = np.asarray(batch["error_type"]).astype(str)
        failed = error_type != ""
        value_columns = [c for c in batch if c not in (*ERROR_FIELDS, NODE_FIELD, "path")]
        ok_tracks = set(np.asarray(batch["track_id"])[~failed].tolist())
        if (~failed).any():
            table = pa.table(
                {c: column_array(c, np.asarray(batch[c])[~failed]) for c in value_columns}
            )
            shards.write_table_atomic(
                fs, shards.new_shard_path(base, self.product), table, self.config_hash
            )
        if failed.any():
            paths = (
                np.asarray(batch["path"])[failed] if "path" in batch else np.full(failed.sum(), "")
            )
            errors = pa.table(
                {
                    "track_id": pa.array(np.asarray(batch["track_id"])[failed].astype(str)),
                    "path": pa.array(np.asarray(paths).astype(str)),
                    "stage": pa.array(np.asarray(batch["error_stage"])[failed].astype(str)),
                    "error_type": pa.array(error_type[failed]),
                    "message": pa.array(np.asarray(batch["error_message"])[failed].astype(str)),
                }
            )
            name = f"{self.product.replace('/', '-')}-{os.urandom(8).hex()}.parquet"
            shards.write_table_atomic(
                fs, shards.join(base, ERRORS_DIR, name), errors, self.config_hash
            )
        track_ids = np.asarray(batch["track_id"]).astype(str)
        first = ~pd.Series(track_ids).duplicated().to_numpy()
        return {
            "track_id": track_ids[first],
            "ok": np.array([t in ok_tracks for t in track_ids[first]]),
            NODE_FIELD: np.asarray(batch[NODE_FIELD]).astype(str)[first],
        }


def column_array(name: str, values: np.ndarray) -> pa.Array:
    """Arrow array of a shard column: strings, int32 indices, float32 values or embeddings."""
    if values.ndim == 2:
        return shards.embedding_array(values)
    if name == "track_id" or values.dtype == object or values.dtype.kind in "US":
        return pa.array(values.astype(str))
    if values.dtype.kind in "iu":
        return pa.array(values.astype(np.int32))
    return pa.array(values.astype(np.float32))


def run_product(
    product: str,
    todo: pd.DataFrame,
    out: str,
    cfg: RunConfig,
    build: Callable,
    progress: Callable[[str], None] = print,
) -> ProductResult:
    """Stream ``todo`` rows (track_id, path) through ``build(ds)`` stages and the shard writer."""
    import ray.data

    result = ProductResult(product=product, n_todo=len(todo))
    if todo.empty:
        return result
    start = time.perf_counter()
    workers = cluster_cpus()
    ds = build(tracks_dataset(todo, cfg.batch_size))
    writer_args = (out, product, product_hash(cfg, product))
    # The writer is I/O: it reserves no CPU, so it streams shards out while the compute actors
    # hold every core (with a CPU reservation it would wait for them to finish).
    writers = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, workers // 4))
    # Multi-row-per-track products keep whole compute blocks together, so a shard never holds
    # part of a track's rows (resume is by track_id).
    writer_batch = None if product == FEATURE_CHUNKS else cfg.shard_rows
    ds = ds.map_batches(
        ShardWriter,
        fn_constructor_args=writer_args,
        batch_size=writer_batch,
        batch_format="numpy",
        num_cpus=0,
        compute=writers,
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        ok = np.asarray(batch["ok"], dtype=bool)
        result.n_ok += int(ok.sum())
        result.n_failed += int((~ok).sum())
        result.nodes.update(np.asarray(batch[NODE_FIELD]).astype(str).tolist())
    result.seconds = time.perf_counter() - start
    progress(
        f"{product}: {result.n_ok} tracks written, {result.n_failed} failed "
        f"in {result.seconds:.1f} s"
    )
    return result


def map_stage(
    ds,
    stage_cls,
    cfg: RunConfig,
    resources: Resources,
    pool_size: int | tuple[int, int],
    args: tuple = (),
):
    """``map_batches`` of a callable-class stage on an actor pool, resources as the stage declares.

    Ray Data restarts dead actors and retries their tasks without limit by default
    (``max_restarts=-1, max_task_retries=-1``); we rely on that on purpose: a killed worker's
    batch is recomputed, and the writer never sees a partial batch.
    """
    import ray.data

    size = resources.concurrency or pool_size
    # Two blocks in flight per actor: the next is already there when one ends, and no actor
    # hoards a queue while another idles at the end of the run.
    in_flight = MAX_BLOCKS_IN_FLIGHT_PER_ACTOR
    compute = (
        ray.data.ActorPoolStrategy(
            min_size=size[0], max_size=size[1], max_tasks_in_flight_per_actor=in_flight
        )
        if isinstance(size, tuple)
        else ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=in_flight)
    )
    return ds.map_batches(
        stage_cls,
        fn_constructor_args=(cfg, *args),
        batch_size=resources.batch_size,
        batch_format="numpy",
        num_cpus=resources.num_cpus,
        num_gpus=resources.num_gpus or None,
        compute=compute,
    )


def run_concurrently(cfg: RunConfig, products: list[str]) -> bool:
    """Run products side by side when embeddings go to GPUs (auto) or when asked to.

    With model actors on GPUs, the feature actors' CPUs and the GPUs work at the same time
    instead of one product after the other; on CPU-only clusters the products would only
    compete for the same cores, so they run in turn.
    """
    if len(products) < 2:
        return False
    if cfg.concurrent_products is not None:
        return cfg.concurrent_products
    from soundclust_ray.stages.embed import embed_resources

    return any(
        embed_resources(cfg, p.split("/", 1)[1]).num_gpus > 0
        for p in products
        if p.startswith("embeddings/")
    )


def features_pipeline(cfg: RunConfig, shared: bool = False):
    """The feature product's stages: one actor per CPU, decode + families.

    ``shared``: another product runs at the same time, so the pool scales between one actor
    and the cores, leaving room for that product's CPU workers.
    """
    from soundclust_ray.stages.features import FeatureStage, feature_resources

    def build(ds):
        resources = feature_resources(cfg)
        pool = max(1, int(cluster_cpus() / resources.num_cpus))
        return map_stage(ds, FeatureStage, cfg, resources, (1, pool) if shared else pool)

    return build


def chunk_features_pipeline(cfg: RunConfig):
    """The ``--chunk-level`` product: one row per classic chunk."""
    from soundclust_ray.stages.features import ClassicChunkStage, feature_resources

    def build(ds):
        resources = feature_resources(cfg)
        return map_stage(ds, ClassicChunkStage, cfg, resources, max(1, cluster_cpus()))

    return build


def with_classic_chunk_cap(
    cfg: RunConfig, valid: pd.DataFrame, out: str, progress: Callable[[str], None]
) -> RunConfig:
    """Fill the classic family's corpus-level chunk cap (seed 001: a lower quantile of durations).

    The cap recorded in OUT/run.json is reused on a rerun, so adding tracks to a corpus does not
    change the features of tracks already written.
    """
    classic = cfg.features.classic
    wants_classic = "classic" in cfg.features.families or cfg.features.chunk_level
    if not wants_classic or classic.max_chunks is not None or valid.empty:
        return cfg
    previous = read_run_info(out).get("config", {}).get("features", {}).get("classic", {})
    cap = previous.get("max_chunks")
    if cap is None:
        from soundclust_ray.features.classic import classic_chunk_cap
        from soundclust_ray.stages.features import probe_durations

        durations = np.concatenate(
            [
                np.asarray(b["duration_s"])
                for b in tracks_dataset(valid, 16)
                .map_batches(probe_durations, batch_size=16, batch_format="numpy", num_cpus=0.5)
                .iter_batches(batch_size=None, batch_format="numpy")
            ]
        )
        finite = durations[np.isfinite(durations)]
        cap = classic_chunk_cap(finite, classic) if finite.size else 1
        progress(
            f"classic: {cap} chunks per track at most (the {classic.chunk_quantile:.0%} "
            f"quantile of {finite.size} durations)"
        )
    features = dataclasses.replace(
        cfg.features, classic=dataclasses.replace(classic, max_chunks=int(cap))
    )
    return dataclasses.replace(cfg, features=features)


def consolidate_errors(out: str, manifest: pd.DataFrame, products: list[str]) -> pd.DataFrame:
    """OUT/errors.parquet: invalid manifest rows + each product's latest error per missing track."""
    fs, base = shards.resolve(out)
    frames = []
    invalid = manifest[manifest["invalid_reason"] != ""]
    if len(invalid):
        frames.append(
            pd.DataFrame(
                {
                    "track_id": invalid["track_id"],
                    "path": invalid["path"],
                    "stage": "manifest",
                    "error_type": "InvalidManifestRow",
                    "message": invalid["invalid_reason"],
                }
            )
        )
    error_files = [
        i.path
        for i in fs.get_file_info(pafs_selector(shards.join(base, ERRORS_DIR)))
        if i.base_name.endswith(".parquet") and not i.base_name.startswith(".tmp")
    ]
    import pyarrow.parquet as pq

    wanted = set(manifest["track_id"])
    for product in products:
        prefix = product.replace("/", "-") + "-"
        done = set(shards.read_column(out, product).to_pylist())
        tables = [
            pq.read_table(p, filesystem=fs)
            for p in sorted(error_files)
            if p.rsplit("/", 1)[-1].startswith(prefix)
        ]
        if not tables:
            continue
        errs = pa.concat_tables(tables).to_pandas()
        errs = errs[~errs["track_id"].isin(done) & errs["track_id"].isin(wanted)]
        frames.append(errs.drop_duplicates("track_id", keep="last"))
    columns = list(shards.ERROR_COLUMNS)
    table = (
        pd.concat(frames, ignore_index=True)[columns]
        if frames
        else pd.DataFrame({c: pd.Series(dtype=str) for c in columns})
    )
    table = table.sort_values(["track_id", "stage"]).reset_index(drop=True)
    shards.write_table_atomic(
        fs,
        shards.join(base, ERRORS_FILE),
        pa.Table.from_pandas(table, schema=shards.ERROR_SCHEMA, preserve_index=False),
    )
    return table


def write_manifest(out: str, manifest: pd.DataFrame) -> None:
    """OUT/manifest.parquet: every input row with its metadata, the driver's join table."""
    fs, base = shards.resolve(out)
    table = pa.Table.from_pandas(manifest.drop(columns=["invalid_reason"]), preserve_index=False)
    shards.write_table_atomic(fs, shards.join(base, MANIFEST_FILE), table)


def write_run_info(out: str, info: dict) -> None:
    """OUT/run.json: config, hashes, inputs, counts and timings of the latest run."""
    fs, base = shards.resolve(out)
    fs.create_dir(base, recursive=True)
    with fs.open_output_stream(shards.join(base, RUN_FILE)) as f:
        f.write(json.dumps(info, indent=2, sort_keys=True, default=str).encode())


def read_run_info(out: str) -> dict:
    """OUT/run.json as a dict ({} when absent)."""
    fs, base = shards.resolve(out)
    path = shards.join(base, RUN_FILE)
    import pyarrow.fs as pafs

    if fs.get_file_info(path).type != pafs.FileType.File:
        return {}
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def node_names() -> dict[str, str]:
    """Ray node id → 'hostname (ip) node <id prefix>' for run.json's per-node counts.

    The id prefix keeps nodes apart that share a host and address (several raylets on one
    machine, as in the local multi-node test), which would otherwise merge into one count.
    """
    import ray

    names = {}
    for n in ray.nodes():
        host, ip = n.get("NodeManagerHostname", "?"), n.get("NodeManagerAddress", "?")
        names[n["NodeID"]] = f"{host} ({ip}) node {n['NodeID'][:8]}"
    return names


def run_pipeline(
    manifest: pd.DataFrame,
    out: str,
    cfg: RunConfig,
    overwrite: bool = False,
    input_desc: str = "",
    progress: Callable[[str], None] = print,
) -> dict:
    """Run every requested product over the manifest and consolidate errors; returns run info."""
    products = [FEATURES] if cfg.features.families else []
    products += [FEATURE_CHUNKS] if cfg.features.chunk_level else []
    products += [f"embeddings/{b}" for b in cfg.embed.backends]
    if not products:
        raise ValueError("nothing to compute: give --features and/or --embed")
    fs, base = shards.resolve(out)
    if overwrite:
        fs.delete_dir_contents(base, missing_dir_ok=True)
    t0 = time.perf_counter()
    valid = manifest[manifest["invalid_reason"] == ""]
    cfg = with_classic_chunk_cap(cfg, valid, out, progress)
    check_out_dir(out, cfg, products, overwrite)
    fs.create_dir(base, recursive=True)
    write_manifest(out, manifest)
    timings = {"manifest": time.perf_counter() - t0}
    concurrent = run_concurrently(cfg, products)

    def run_one(product: str) -> ProductResult:
        done = set(shards.read_column(out, product).to_pylist())
        todo = valid[~valid["track_id"].isin(done)]
        skipped = len(valid) - len(todo)
        if skipped:
            progress(f"{product}: {skipped} tracks already in {shards.join(out, product)}, skipped")
        if product == FEATURES:
            build = features_pipeline(cfg, shared=concurrent)
        elif product == FEATURE_CHUNKS:
            build = chunk_features_pipeline(cfg)
        else:
            build = embedding_pipeline(cfg, product)
        result = run_product(product, todo, out, cfg, build, progress)
        result.n_skipped = skipped
        return result

    if concurrent:
        progress(f"running {', '.join(products)} concurrently (model actors on GPUs)")
        with ThreadPoolExecutor(max_workers=len(products)) as pool:
            results = list(pool.map(run_one, products))
    else:
        results = [run_one(product) for product in products]
    timings.update({r.product: r.seconds for r in results})
    return finish_run(out, manifest, cfg, results, timings, input_desc)


def products_in_out(out: str) -> list[str]:
    """Every product with at least one committed shard in OUT."""
    found = [p for p in (FEATURES, FEATURE_CHUNKS) if shards.list_shards(out, p)]
    fs, base = shards.resolve(out)
    for info in fs.get_file_info(pafs_selector(shards.join(base, "embeddings"))):
        if shards.list_shards(out, f"embeddings/{info.base_name}"):
            found.append(f"embeddings/{info.base_name}")
    return found


def finish_run(
    out: str,
    manifest: pd.DataFrame,
    cfg: RunConfig,
    results: list[ProductResult],
    timings: dict[str, float],
    input_desc: str,
) -> dict:
    """Consolidate errors and write OUT/run.json; returns the run info.

    Products of earlier runs on the same OUT (e.g. ``jobs/embed.py`` after
    ``jobs/extract_features.py``) keep their entries and their errors.
    """
    ran = [r.product for r in results]
    products = list(dict.fromkeys([*ran, *products_in_out(out)]))
    errors = consolidate_errors(out, manifest, products)
    names = node_names()
    previous = read_run_info(out)
    info = {
        "input": input_desc,
        "source": cfg.source,
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
        "product_hashes": {
            **previous.get("product_hashes", {}),
            **{p: product_hash(cfg, p) for p in ran},
        },
        "products": {
            **{p: v for p, v in previous.get("products", {}).items() if p in products},
            **{
                r.product: {
                    "todo": r.n_todo,
                    "skipped": r.n_skipped,
                    "written": r.n_ok,
                    "failed": r.n_failed,
                    "seconds": round(r.seconds, 3),
                    "tracks_per_node": {names.get(k, k): v for k, v in r.nodes.items()},
                }
                for r in results
            },
        },
        "n_input_rows": len(manifest),
        "n_failed": int(errors["track_id"].nunique()),
        "timings": {**previous.get("timings", {}), **{k: round(v, 3) for k, v in timings.items()}},
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


def embedding_pipeline(cfg: RunConfig, product: str):
    """An embedding product's stages: CPU prepare actors, then model actors (GPU when present).

    The prepare pool is capped so the model actors' CPUs stay free: otherwise decode workers
    can take every core and the model actor waits for them to finish (no streaming).
    """
    from soundclust_ray.stages.embed import (
        EmbedPrepareStage,
        EmbedStage,
        embed_prepare_resources,
        embed_resources,
    )

    backend = product.split("/", 1)[1]

    def build(ds):
        model = embed_resources(cfg, backend)
        model_actors = model.concurrency or 1
        min_model_actors = model_actors[0] if isinstance(model_actors, tuple) else model_actors
        prepare = embed_prepare_resources(cfg, backend)
        spare = cluster_cpus() - min_model_actors * model.num_cpus
        prepare_pool = (1, max(1, int(spare // prepare.num_cpus)))
        ds = map_stage(
            ds,
            EmbedPrepareStage,
            cfg,
            dataclasses.replace(prepare, concurrency=prepare_pool),
            1,
            args=(backend,),
        )
        return map_stage(ds, EmbedStage, cfg, model, model_actors, args=(backend,))

    return build
