"""Run a source's products on Ray Data: manifest rows → stages → shard writer, streaming.

Each *product* (``features``, ``features_chunks``, ``embeddings/<backend>``) is one streaming
pipeline: read the manifest rows still to do → compute stage(s) → shard writer. The writer
returns a tiny summary row per track, so the driver holds summaries, never features. Resume is a
set difference on the ``track_id`` column of committed shards. Ray start-up is ``ray_env``'s,
pool sizing ``stages/pools``', the writer ``stages/writer``'s, the records ``runinfo``'s.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from soundclust_ray import outdir, shards
from soundclust_ray.config import RunConfig
from soundclust_ray.errors import UserError
from soundclust_ray.progress import TrackProgress
from soundclust_ray.runinfo import ProductResult, check_out_dir, finish_run, product_hash
from soundclust_ray.stages.base import NODE_FIELD
from soundclust_ray.stages.pools import cpu_pool, map_stage, tracks_dataset, writer_pool
from soundclust_ray.stages.writer import ColumnSpec, ShardWriter


def run_product(
    product: str,
    todo: pd.DataFrame,
    out: str,
    cfg: RunConfig,
    build: Callable,
    spec: ColumnSpec,
    progress: Callable[[str], None] = print,
    bars: bool = False,
) -> ProductResult:
    """Stream ``todo`` rows (track_id, path) through ``build(ds)`` stages and the shard writer.

    ``spec`` is the last stage's declared output columns (the shards' schema); ``bars``: show
    a progress bar on a terminal (else ``progress`` gets a line now and then).
    """
    result = ProductResult(product=product, n_todo=len(todo))
    if todo.empty:
        return result
    import ray.data

    start = time.perf_counter()
    ds = build(tracks_dataset(todo, cfg.batch_size, cfg.pools))
    low, high = writer_pool(cfg.pools)
    # The writer takes each compute block as it comes (batch_size=None: no waiting in Ray Data
    # for shard_rows tracks, which a stopped job would lose) and commits it before returning;
    # it fills shards up to cfg.shard_rows tracks itself. Whole blocks also keep a multi-row
    # track's rows together (resume is by track_id). The writer is I/O: it reserves no CPU, so
    # it streams shards out while the compute actors hold every core (with a CPU reservation
    # it would wait for them to finish).
    ds = ds.map_batches(
        ShardWriter,
        fn_constructor_args=(out, product, product_hash(cfg, product), spec, cfg.shard_rows),
        batch_size=None,
        batch_format="numpy",
        num_cpus=0,
        compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
    )
    counter = TrackProgress(product, len(todo), progress, bars)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        ok = np.asarray(batch["ok"], dtype=bool)
        result.n_ok += int(ok.sum())
        result.n_failed += int((~ok).sum())
        result.nodes.update(np.asarray(batch[NODE_FIELD]).astype(str).tolist())
        counter.advance(len(ok))
    counter.close()
    result.seconds = time.perf_counter() - start
    progress(
        f"{product}: {result.n_ok} tracks written, {result.n_failed} failed "
        f"in {result.seconds:.1f} s"
    )
    return result


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
    from soundclust_ray.stages.embed import EmbedStage

    return any(
        EmbedStage.resources(cfg, p.split("/", 1)[1]).num_gpus > 0
        for p in products
        if p.startswith(outdir.EMBEDDINGS + "/")
    )


def cpu_stage_pipeline(cfg: RunConfig, stage_cls, shared: bool = False):
    """A one-stage CPU product (features, classic chunks): one actor per CPU of the stage.

    ``shared``: another product runs at the same time, so the pool scales between one actor
    and the cores, leaving room for that product's CPU workers.
    """

    def build(ds):
        resources = stage_cls.resources(cfg)
        return map_stage(ds, stage_cls, cfg, resources, cpu_pool(resources, shared))

    return build, stage_cls.WRITES


def embedding_pipeline(cfg: RunConfig, product: str):
    """An embedding product's stages: CPU prepare actors, then model actors (GPU when present).

    The prepare pool is capped so the model actors' CPUs stay free: otherwise decode workers
    can take every core and the model actor waits for them to finish (no streaming).
    """
    from soundclust_ray.ray_env import cluster_cpus
    from soundclust_ray.stages.embed import EmbedPrepareStage, EmbedStage

    backend = product.split("/", 1)[1]

    def build(ds):
        model = EmbedStage.resources(cfg, backend)
        model_actors = model.concurrency or 1
        min_model_actors = model_actors[0] if isinstance(model_actors, tuple) else model_actors
        prepare = EmbedPrepareStage.resources(cfg, backend)
        spare = cluster_cpus() - min_model_actors * model.num_cpus
        prepare_pool = (1, max(1, int(spare // prepare.num_cpus)))
        prepare = dataclasses.replace(prepare, concurrency=prepare_pool)
        ds = map_stage(ds, EmbedPrepareStage, cfg, prepare, 1, args=(backend,))
        return map_stage(ds, EmbedStage, cfg, model, model_actors, args=(backend,))

    return build, EmbedStage.WRITES


def with_classic_chunk_cap(
    cfg: RunConfig, valid: pd.DataFrame, out: str, progress: Callable[[str], None]
) -> RunConfig:
    """Fill the classic family's corpus-level chunk cap (seed 001: a lower quantile of durations).

    The cap recorded in OUT/run.json is reused on a rerun, so adding tracks to a corpus does not
    change the features of tracks already written.
    """
    if not needs_classic_cap(cfg, valid):
        return cfg
    cap = recorded_classic_cap(out)
    if cap is None:
        cap = probe_classic_chunk_cap(cfg, valid, progress)
    return with_classic_cap(cfg, cap)


def needs_classic_cap(cfg: RunConfig, valid: pd.DataFrame) -> bool:
    """The run computes the classic family and its chunk cap is not set yet."""
    wants_classic = "classic" in cfg.features.families or cfg.features.chunk_level
    return wants_classic and cfg.features.classic.max_chunks is None and not valid.empty


def recorded_classic_cap(out: str) -> int | None:
    """The classic chunk cap an earlier run on OUT used (run.json), or None."""
    from soundclust_ray.runinfo import read_run_info

    previous = read_run_info(out).get("config", {}).get("features", {}).get("classic", {})
    cap = previous.get("max_chunks")
    return None if cap is None else int(cap)


def with_classic_cap(cfg: RunConfig, cap: int) -> RunConfig:
    classic = dataclasses.replace(cfg.features.classic, max_chunks=int(cap))
    return dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, classic=classic))


def pending_tracks(manifest: pd.DataFrame, out: str, cfg: RunConfig) -> int | None:
    """(product, track) pairs the run still has to compute, from OUT's shards alone, after
    refusing an OUT of another config (both before Ray starts). None when the classic chunk
    cap must first be probed from the corpus (a first run): only Ray can tell then."""
    valid = manifest[manifest["invalid_reason"] == ""]
    if needs_classic_cap(cfg, valid):
        cap = recorded_classic_cap(out)
        if cap is None:
            return None
        cfg = with_classic_cap(cfg, cap)
    products = products_of(cfg)
    if not products:
        raise UserError("nothing to compute: give --features and/or --embed")
    check_out_dir(out, cfg, products)
    wanted = set(valid["track_id"])
    return sum(len(wanted - done_tracks(out, product)) for product in products)


def done_tracks(out: str, product: str) -> set[str]:
    """Track ids already in ``product``'s committed shards: what a resume skips."""
    return set(shards.read_column(out, product).to_pylist())


def probe_classic_chunk_cap(cfg: RunConfig, valid: pd.DataFrame, progress) -> int:
    """Read every track's header duration (Ray tasks) and take seed 001's quantile cap."""
    from soundclust_ray.features.classic import classic_chunk_cap
    from soundclust_ray.stages.features import probe_durations

    pools, classic = cfg.pools, cfg.features.classic
    ds = tracks_dataset(valid, pools.probe_batch_size, pools).map_batches(
        probe_durations,
        batch_size=pools.probe_batch_size,
        batch_format="numpy",
        num_cpus=pools.probe_num_cpus,
    )
    batches = ds.iter_batches(batch_size=None, batch_format="numpy")
    durations = np.concatenate([np.asarray(b["duration_s"]) for b in batches])
    finite = durations[np.isfinite(durations)]
    cap = classic_chunk_cap(finite, classic) if finite.size else 1
    progress(
        f"classic: {cap} chunks per track at most (the {classic.chunk_quantile:.0%} "
        f"quantile of {finite.size} durations)"
    )
    return cap


def products_of(cfg: RunConfig) -> list[str]:
    """The products an audio run computes, in the order they run."""
    products = [outdir.FEATURES] if cfg.features.families else []
    products += [outdir.FEATURE_CHUNKS] if cfg.features.chunk_level else []
    products += [outdir.embeddings_product(b) for b in cfg.embed.backends]
    return products


def build_product(cfg: RunConfig, product: str, concurrent: bool):
    """(stages builder, declared output columns) of one product."""
    from soundclust_ray.stages.features import ClassicChunkStage, FeatureStage

    if product == outdir.FEATURES:
        return cpu_stage_pipeline(cfg, FeatureStage, shared=concurrent)
    if product == outdir.FEATURE_CHUNKS:
        return cpu_stage_pipeline(cfg, ClassicChunkStage)
    return embedding_pipeline(cfg, product)


def run_pipeline(
    manifest: pd.DataFrame,
    out: str,
    cfg: RunConfig,
    input_desc: str = "",
    progress: Callable[[str], None] = print,
    bars: bool = False,
) -> dict:
    """Run every requested product over the manifest and consolidate errors; returns run info."""
    from soundclust_ray.runinfo import write_manifest

    products = products_of(cfg)
    if not products:
        raise UserError("nothing to compute: give --features and/or --embed")
    t0 = time.perf_counter()
    valid = manifest[manifest["invalid_reason"] == ""]
    cfg = with_classic_chunk_cap(cfg, valid, out, progress)
    check_out_dir(out, cfg, products)
    write_manifest(out, manifest)
    timings = {"manifest": time.perf_counter() - t0}
    todos = {
        p: valid[~valid["track_id"].isin(shards.read_column(out, p).to_pylist())] for p in products
    }
    concurrent = run_concurrently(cfg, [p for p in products if not todos[p].empty])

    def run_one(product: str) -> ProductResult:
        todo = todos[product]
        skipped = len(valid) - len(todo)
        if skipped:
            progress(f"{product}: {skipped} tracks already in {outdir.join(out, product)}, skipped")
        if todo.empty:  # nothing to build: no model module (torch) is even imported
            result = ProductResult(product=product)
        else:
            build, spec = build_product(cfg, product, concurrent)
            result = run_product(product, todo, out, cfg, build, spec, progress, bars)
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
