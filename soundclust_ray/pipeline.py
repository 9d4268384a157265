"""Run a source's products on Ray Data: manifest rows → stages → shard writer, streaming.

Each *product* (``features/<family>``, ``features_chunks``, ``embeddings/<backend>``) has its
own shards and config hash. An audio run's pending products share one streaming pass
(``stages.passes``): the rows still to do → CPU actors that decode each track once for all of
its pending products (``stages.track.TrackStage``) → model actors of their own for the
backends that need them (GPUs, CLAP) → one writer per product. A writer returns a tiny summary
row per track, so the driver holds summaries, never features. Resume is a set difference, per
product, on the ``track_id`` column of committed shards. Ray start-up is ``ray_env``'s, pool
sizing ``stages/pools``', the writer ``stages/writer``'s, the records ``runinfo``'s,
``--recompute``'s staging ``staging``'s.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from soundclust_ray import outdir, shards, staging
from soundclust_ray.config import RunConfig
from soundclust_ray.errors import UserError
from soundclust_ray.progress import TrackProgress
from soundclust_ray.runinfo import ProductResult, check_out_dir, finish_run, product_hash
from soundclust_ray.stages.base import NODE_FIELD, Resources
from soundclust_ray.stages.pools import cpu_pool, map_stage, tracks_dataset, writer_pool
from soundclust_ray.stages.writer import (
    PRODUCT_FIELD,
    ColumnSpec,
    PassShardWriter,
    PassTarget,
    ShardWriter,
)

PASS_TIMING = "pass"
"""``seconds_per_stage`` key of the run's pass (decode and every product, written)."""


def run_product(
    product: str,
    todo: pd.DataFrame,
    out: str,
    cfg: RunConfig,
    build: Callable,
    spec: ColumnSpec,
    progress: Callable[[str], None] = print,
    bars: bool = False,
    target: str | None = None,
) -> ProductResult:
    """Stream ``todo`` rows (track_id, path) through ``build(ds)`` stages and the shard writer.

    ``spec`` is the last stage's declared output columns (the shards' schema); ``bars``: show
    a progress bar on a terminal (else ``progress`` gets a line now and then); ``target``: the
    folder the shards go to when it is not the product's own (``--recompute`` staging).
    """
    if todo.empty:
        return ProductResult(product=product)
    ds = build(tracks_dataset(todo, cfg.batch_size, cfg.pools))
    target = target or product
    args = (out, target, product_hash(cfg, product), spec, cfg.shard_rows)
    totals, names = {target: len(todo)}, {target: product}
    return stream_to_writer(ds, ShardWriter, args, totals, cfg, progress, bars, names)[0]


def stream_to_writer(
    ds,
    writer_cls,
    writer_args: tuple,
    totals: dict[str, int],
    cfg: RunConfig,
    progress: Callable[[str], None],
    bars: bool,
    names: dict[str, str] | None = None,
) -> list[ProductResult]:
    """Send the computed blocks of ``ds`` to ``writer_cls`` actors and count their summaries,
    one progress bar and one result per folder of ``totals`` (folder → tracks to do), named
    by ``names`` (folder → product; default: the folder)."""
    import ray.data

    start = time.perf_counter()
    low, high = writer_pool(cfg.pools)
    # The writer takes each compute block as it comes (batch_size=None: no waiting in Ray Data
    # for shard_rows tracks, which a stopped job would lose) and commits it before returning;
    # it fills shards up to cfg.shard_rows tracks itself. Whole blocks also keep a multi-row
    # track's rows together (resume is by track_id). The writer is I/O: it reserves no CPU, so
    # it streams shards out while the compute actors hold every core (with a CPU reservation
    # it would wait for them to finish).
    ds = ds.map_batches(
        writer_cls,
        fn_constructor_args=writer_args,
        batch_size=None,
        batch_format="numpy",
        num_cpus=0,
        compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
    )
    names = names or {}
    results = {p: ProductResult(product=names.get(p, p), n_todo=n) for p, n in totals.items()}
    counters = {p: TrackProgress(p, n, progress, bars) for p, n in totals.items()}
    only = next(iter(totals)) if len(totals) == 1 else None
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        ok = np.asarray(batch["ok"], dtype=bool)
        products = np.asarray(batch[PRODUCT_FIELD]) if only is None else np.full(len(ok), only)
        nodes = np.asarray(batch[NODE_FIELD]).astype(str)
        for product in set(products.tolist()):
            rows = products == product
            result = results[product]
            result.n_ok += int(ok[rows].sum())
            result.n_failed += int((~ok[rows]).sum())
            result.nodes.update(nodes[rows].tolist())
            counters[product].advance(int(rows.sum()))
    seconds = time.perf_counter() - start
    for product, result in results.items():
        counters[product].close()
        result.seconds = seconds
        progress(
            f"{result.product}: {result.n_ok} tracks written, {result.n_failed} failed "
            f"in {result.seconds:.1f} s"
        )
    return list(results.values())


def run_pass(
    todos: dict[str, pd.DataFrame],
    targets: dict[str, str],
    out: str,
    cfg: RunConfig,
    progress: Callable[[str], None],
    bars: bool,
) -> list[ProductResult]:
    """Every pending product of an audio run in one streaming pass (``stages.passes``): each
    track still missing from any of them is decoded once, and only its pending products are
    computed (its ``products`` column); ``targets`` maps a product to the folder its shards go
    to (itself, or its ``--recompute`` staging folder). One progress bar per product."""
    from soundclust_ray.stages.embed import PassEmbedStage, separate_model_actors
    from soundclust_ray.stages.passes import PRODUCTS_FIELD, pass_key
    from soundclust_ray.stages.track import TrackStage

    pending = {p: t for p, t in todos.items() if not t.empty}
    if not pending:
        return []
    keys = tuple(pass_key(p) for p in pending)
    todo_sets = {pass_key(p): set(t["track_id"]) for p, t in pending.items()}
    rows = pd.concat(list(pending.values())).drop_duplicates("track_id")
    pending_of = [",".join(k for k in keys if t in todo_sets[k]) for t in rows["track_id"]]
    rows = rows.assign(**{PRODUCTS_FIELD: pending_of})
    backends = [pass_key(p) for p in pending if p.startswith(outdir.EMBEDDINGS + "/")]
    separate = tuple(b for b in backends if separate_model_actors(cfg, b))
    in_cpu_actors = tuple(b for b in backends if b not in separate)
    ds = tracks_dataset(rows, cfg.batch_size, cfg.pools, ("track_id", "path", PRODUCTS_FIELD))
    resources = TrackStage.resources(cfg)
    models = {b: PassEmbedStage.resources(cfg, b) for b in separate}
    pool = track_pool(resources, list(models.values()))
    ds = map_stage(ds, TrackStage, cfg, resources, pool, (keys, in_cpu_actors))
    for backend, model in models.items():
        ds = map_stage(ds, PassEmbedStage, cfg, model, model.concurrency or 1, (backend,))
    plan = tuple(pass_target(cfg, p, targets[p]) for p in pending)
    totals = {targets[p]: len(t) for p, t in pending.items()}
    names = {targets[p]: p for p in pending}
    args = (out, plan, cfg.shard_rows)
    return stream_to_writer(ds, PassShardWriter, args, totals, cfg, progress, bars, names)


def track_pool(resources: Resources, models: list[Resources]) -> int | tuple[int, int]:
    """The pass's CPU actors: one per CPU slot; beside model actors of their own (``models``),
    (1, the CPUs their smallest pools leave), or the decode actors take every core and the
    model actors wait for them to finish (no streaming)."""
    from soundclust_ray.ray_env import cluster_cpus

    if not models:
        return cpu_pool(resources)
    spare = cluster_cpus()
    for model in models:
        actors = model.concurrency or 1
        spare -= (actors[0] if isinstance(actors, tuple) else actors) * model.num_cpus
    return (1, max(1, int(spare // resources.num_cpus)))


def pass_target(cfg: RunConfig, product: str, folder: str) -> PassTarget:
    """Where and how the pass writes ``product``: its key, folder, hash and stage's columns."""
    from soundclust_ray.stages.embed import EmbedStage
    from soundclust_ray.stages.features import ClassicChunkStage, FeatureStage
    from soundclust_ray.stages.passes import pass_key

    if product.startswith(outdir.FEATURES + "/"):
        spec, nested = FeatureStage.WRITES, False
    elif product == outdir.FEATURE_CHUNKS:
        spec, nested = ClassicChunkStage.WRITES, True
    else:
        spec, nested = EmbedStage.WRITES, True
    return PassTarget(pass_key(product), folder, product_hash(cfg, product), spec, nested)


CLASSIC_PRODUCTS = (outdir.feature_product("classic"), outdir.FEATURE_CHUNKS)
"""The products that depend on the classic family's corpus-level chunk cap."""


def with_classic_chunk_cap(
    cfg: RunConfig,
    valid: pd.DataFrame,
    out: str,
    progress: Callable[[str], None],
    fresh: bool = False,
) -> RunConfig:
    """Fill the classic family's corpus-level chunk cap (seed 001: a lower quantile of durations).

    The cap an earlier run on OUT used is reused, so adding tracks to a corpus does not change
    the features of tracks already written; ``fresh`` (a classic product is recomputed) probes
    the corpus again.
    """
    if not needs_classic_cap(cfg, valid):
        return cfg
    cap = None if fresh else recorded_classic_cap(out)
    if cap is None:
        cap = probe_classic_chunk_cap(cfg, valid, progress)
    return with_classic_cap(cfg, cap)


def needs_classic_cap(cfg: RunConfig, valid: pd.DataFrame) -> bool:
    """The run computes the classic family and its chunk cap is not set yet."""
    wants_classic = "classic" in cfg.features.families or cfg.features.chunk_level
    return wants_classic and cfg.features.classic.max_chunks is None and not valid.empty


def recorded_classic_cap(out: str) -> int | None:
    """The classic chunk cap OUT's classic products were computed with (run.json's product
    settings, else its last config), or None."""
    from soundclust_ray.runinfo import PRODUCT_SETTINGS_KEY, read_run_info

    info = read_run_info(out)
    settings = info.get(PRODUCT_SETTINGS_KEY, {})
    recorded = [settings.get(p, {}).get("classic", {}) for p in CLASSIC_PRODUCTS]
    recorded.append(info.get("config", {}).get("features", {}).get("classic", {}))
    cap = next((r["max_chunks"] for r in recorded if r.get("max_chunks") is not None), None)
    return None if cap is None else int(cap)


def with_classic_cap(cfg: RunConfig, cap: int) -> RunConfig:
    classic = dataclasses.replace(cfg.features.classic, max_chunks=int(cap))
    return dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, classic=classic))


def pending_tracks(
    manifest: pd.DataFrame, out: str, cfg: RunConfig, recompute: tuple[str, ...] = ()
) -> int | None:
    """(product, track) pairs the run still has to compute, from OUT's shards alone, after
    refusing a product of OUT made with other settings (both before Ray starts). None when the
    classic chunk cap must first be probed from the corpus (classic is new to OUT, or
    recomputed): only Ray can tell then, and the other products are checked here."""
    valid = manifest[manifest["invalid_reason"] == ""]
    products = products_of(cfg)
    if not products:
        raise UserError("nothing to compute: give --features and/or --embed")
    if needs_classic_cap(cfg, valid):
        fresh = any(p in recompute for p in CLASSIC_PRODUCTS)
        cap = None if fresh else recorded_classic_cap(out)
        if cap is None:
            others = [p for p in products if p not in CLASSIC_PRODUCTS]
            check_out_dir(out, cfg, others, recompute)
            return None
        cfg = with_classic_cap(cfg, cap)
    check_out_dir(out, cfg, products, recompute)
    wanted = set(valid["track_id"])
    pending = 0
    for product in products:
        target = product
        if product in recompute:
            staged = shards.shard_config_hashes(out, outdir.staging_product(product))
            fresh = staged != {product_hash(cfg, product)}
            target = None if fresh else outdir.staging_product(product)
        pending += len(wanted - (done_tracks(out, target) if target else set()))
    return pending


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
    products = [outdir.feature_product(f) for f in cfg.features.families]
    products += [outdir.FEATURE_CHUNKS] if cfg.features.chunk_level else []
    products += [outdir.embeddings_product(b) for b in cfg.embed.backends]
    return products


def run_pipeline(
    manifest: pd.DataFrame,
    out: str,
    cfg: RunConfig,
    input_desc: str = "",
    progress: Callable[[str], None] = print,
    bars: bool = False,
    recompute: tuple[str, ...] = (),
) -> dict:
    """Run every requested product over the manifest and consolidate errors; returns run info.

    Only what is pending is computed: the tracks missing from each product, and every track
    of a ``recompute`` product (into its staging folder, which replaces the old shards once
    the pass has written it)."""
    from soundclust_ray.runinfo import write_manifest

    products = products_of(cfg)
    if not products:
        raise UserError("nothing to compute: give --features and/or --embed")
    t0 = time.perf_counter()
    valid = manifest[manifest["invalid_reason"] == ""]
    fresh = any(p in recompute for p in CLASSIC_PRODUCTS)
    cfg = with_classic_chunk_cap(cfg, valid, out, progress, fresh)
    check_out_dir(out, cfg, products, recompute)
    write_manifest(out, manifest)
    timings = {"manifest": time.perf_counter() - t0}
    targets = {
        p: staging.prepare(out, p, product_hash(cfg, p)) if p in recompute else p for p in products
    }
    todos = {p: valid[~valid["track_id"].isin(done_tracks(out, targets[p]))] for p in products}
    for product in products:
        skipped = len(valid) - len(todos[product])
        if skipped:
            where = outdir.join(out, targets[product])
            progress(f"{product}: {skipped} tracks already in {where}, skipped")
    ran = run_pass(todos, targets, out, cfg, progress, bars)
    by_product = {r.product: r for r in ran}
    results = []
    for product in products:
        result = by_product.get(product, ProductResult(product=product))
        result.n_skipped = len(valid) - len(todos[product])
        results.append(result)
        if product in recompute:
            staging.promote(out, product)
            progress(f"{product}: recomputed; its earlier shards were replaced")
    if ran:  # the products shared one pass: its time once
        timings[PASS_TIMING] = max(r.seconds for r in ran)
    return finish_run(out, manifest, cfg, results, timings, input_desc)
