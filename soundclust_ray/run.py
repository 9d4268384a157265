"""The one orchestrator of a run, the same for every source.

guard OUT → list the inputs (the source's manifest) → start Ray if the source needs it →
compute the products → the source's post-steps → the analysis → the error-rate check.
``cli.py`` parses arguments and prints; jobs call :func:`execute` the same way.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from soundclust_ray import outdir, outguard, storage
from soundclust_ray.analysis.executor import SERIAL
from soundclust_ray.config import AnalysisConfig, RunConfig
from soundclust_ray.errors import UserError
from soundclust_ray.ray_env import init_ray, ray_output_to, stop_ray_in_background
from soundclust_ray.runinfo import (
    check_accounting,
    error_rate_exceeded,
    last_analysis_options,
    products_in_out,
    record_analysis_options,
    staging_products,
)
from soundclust_ray.sources import get_source
from soundclust_ray.sources.base import Listing, RunOptions, Say


@dataclass
class RunOutcome:
    """What a run did: its run info, the analysis metrics (None when skipped), time, verdict."""

    info: dict
    metrics: dict | None
    seconds: float
    failure: str | None
    """The error-rate message when more tracks failed than allowed, else None."""


def guard_out(opts: RunOptions, say: Say) -> None:
    """Make OUT usable before any work (see ``outguard``): a folder soundclust owns, emptied of
    soundclust's own files with ``--overwrite``, an older layout upgraded or refused
    (``upgrade``), unreadable shards moved to OUT/quarantine."""
    from soundclust_ray.upgrade import upgrade_out

    inputs = [storage.local_path(opts.input_path)]
    marker = outguard.claim_out(opts.out, inputs)
    if opts.overwrite:
        outguard.remove_owned(opts.out, marker, inputs)
    upgrade_out(opts.out, marker, say)
    for product in products_in_out(opts.out):
        for name in outguard.quarantine_broken_shards(opts.out, product):
            say(
                f"{name}: unreadable, moved to {outdir.path(opts.out, outguard.QUARANTINE)}; "
                "its tracks are recomputed"
            )


def forget_stale_tracks(out: str, listing: Listing, say: Say) -> None:
    """Content-aware resume: drop the shard rows of tracks whose file changed or left the input
    (identity = the manifest's source_id), so they are recomputed or vanish from the outputs."""
    if listing.frame is None or "source_id" not in listing.frame.columns:
        return
    changed, removed = outguard.stale_tracks(out, listing.frame)
    if not changed and not removed:
        return
    for product in [*products_in_out(out), *staging_products(out)]:
        outguard.drop_tracks(out, product, changed | removed)
    say(
        f"resume: {len(changed)} changed files recomputed, {len(removed)} tracks no longer in "
        "the input dropped from OUT"
    )


def ray_log_dir(out: str) -> str:
    """Where Ray's driver output goes: OUT/logs for a local OUT; for an object-store OUT a
    local folder (a file descriptor cannot point into a bucket, and a relative folder named
    after the bucket must not appear in the user's working directory)."""
    if not storage.is_remote(out):
        return outdir.path(out, outdir.LOGS)
    import hashlib
    import tempfile

    key = hashlib.sha256(out.encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"soundclust_ray-logs-{key}")


def corpus_tracks(listing: Listing) -> int:
    """Usable tracks of a listing (rows without an ``invalid_reason``); 0 when not known."""
    frame = listing.frame
    if frame is not None and "invalid_reason" in frame.columns:
        return int((frame["invalid_reason"] == "").sum())
    return listing.n_rows


def out_tracks(out: str) -> int:
    """Usable tracks of OUT's manifest (0 when it has none)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    fs, base = outdir.resolve(out)
    target = outdir.join(base, outdir.MANIFEST)
    try:
        names = pq.read_schema(target, filesystem=fs).names
    except OSError:  # no manifest (FileNotFoundError) or not a Parquet file
        return 0
    if "invalid_reason" not in names:
        return pq.read_metadata(target, filesystem=fs).num_rows
    reasons = outdir.read_table(out, outdir.MANIFEST, ["invalid_reason"]).column(0)
    return int(pc.sum(pc.equal(reasons, "")).as_py() or 0)


def check_k_fits(k: int | str, n_tracks: int) -> None:
    """UserError when ``--k`` asks for as many k-means clusters as the corpus has tracks, or
    more (the analysis can make at most tracks - 1); checked before Ray starts and before the
    fit. A default k is clamped by the analysis instead, with a note."""
    if isinstance(k, int) and 0 < n_tracks <= k:
        most = n_tracks - 1
        hint = f"--k {most} or less, or --k auto" if most >= 2 else "--k auto"
        raise UserError(
            f"--k {k} needs more than {k} tracks and the corpus has {n_tracks}: give {hint}"
        )


def run_analysis(
    out: str,
    cfg: AnalysisConfig,
    label_col: str | None,
    progress: bool,
    k_given: bool = False,
) -> dict:
    """The driver analysis; its option errors (unknown label, backend, matrix, a ``k_given``
    too large for the corpus: ``check_k_fits``) are user errors."""
    from soundclust_ray.analysis.driver import analyze

    n_tracks = out_tracks(out)
    if k_given:
        check_k_fits(cfg.k, n_tracks)
    for product in products_in_out(out):
        broken = outguard.broken_shards(out, product)
        if broken:
            raise UserError(
                f"{outdir.path(out, broken[0])} is unreadable (truncated or corrupt): "
                "`soundclust run` again moves it to quarantine/ and recomputes its tracks"
            )
    executor = SERIAL
    if "ray" in sys.modules:  # Ray can only be up if imported; `analyze` alone never loads it
        from soundclust_ray.ray_executor import analysis_executor

        executor = analysis_executor(n_tracks)
    try:
        metrics = analyze(out, cfg, label_col=label_col, progress=progress, executor=executor)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from exc
    record_analysis_options(out, cfg, label_col, analysis_inputs_key(out, cfg, label_col))
    return metrics


def analysis_inputs_key(out: str, cfg: AnalysisConfig, label_col: str | None) -> str:
    """What an analysis of OUT depends on: its options, the label column, the manifest and
    error table as written, every committed shard's name, size and modification time (a
    shard is only ever replaced whole, by an atomic rename), and which feature families the
    matrix takes (the run's ``--features``)."""
    import hashlib
    import json

    from soundclust_ray import shards
    from soundclust_ray.config import to_dict

    fs, _ = outdir.resolve(out)
    digest = hashlib.sha256()
    listing = {
        product: [(i.path, i.size, i.mtime_ns) for i in fs.get_file_info(paths)]
        for product in products_in_out(out)
        for paths in [shards.list_shards(out, product)]
    }
    from soundclust_ray.analysis.gather import feature_products

    head = {"config": to_dict(cfg), "label_col": label_col, "shards": listing}
    head["features"] = feature_products(out)
    digest.update(json.dumps(head, sort_keys=True, default=str).encode())
    for name in (outdir.MANIFEST, outdir.ERRORS):
        digest.update(outdir.read_bytes(out, name) or b"")
    return digest.hexdigest()


def current_metrics(out: str, cfg: AnalysisConfig, label_col: str | None) -> dict | None:
    """The last analysis's metrics when it ran on exactly these inputs and options and its
    outputs are all still there (a rerun with nothing new answers at once); else None."""
    saved = last_analysis_options(out) or {}
    outputs = (outdir.METRICS, outdir.CLUSTERS) + ((outdir.REPORT,) if cfg.report else ())
    if not saved.get("inputs_key") or not all(outdir.exists(out, n) for n in outputs):
        return None
    if saved["inputs_key"] != analysis_inputs_key(out, cfg, label_col):
        return None
    return outdir.read_json(out, outdir.METRICS) or None


def _as_config_value(value: object) -> object:
    """A JSON value back as the config holds it (JSON lists were tuples)."""
    return tuple(_as_config_value(v) for v in value) if isinstance(value, list) else value


def remembered_analysis(
    out: str, cfg: AnalysisConfig, label_col: str | None, typed: set[str]
) -> tuple[AnalysisConfig, str | None, dict]:
    """``analyze OUT``: every analysis option the user did not type (``typed``: AnalysisConfig
    field names, plus "label_col") is what OUT's last analysis used, so a re-analysis with only
    ``--k auto`` keeps the run's label column and its NMI. Returns the config, the label
    column and the remembered values that differ from the defaults (for one summary line)."""
    import dataclasses

    saved = last_analysis_options(out)
    if saved is None:
        return cfg, label_col, {}
    names = {f.name for f in dataclasses.fields(cfg)}
    changes = {
        name: _as_config_value(value)
        for name, value in (saved.get("config") or {}).items()
        if name in names and name not in typed and _as_config_value(value) != getattr(cfg, name)
    }
    if "label_col" not in typed and saved.get("label_col"):
        label_col = saved["label_col"]
        changes["label_col"] = label_col
    fields = {k: v for k, v in changes.items() if k != "label_col"}
    return dataclasses.replace(cfg, **fields), label_col, changes


def execute(
    source_name: str, opts: RunOptions, cfg: RunConfig, say: Say, k_given: bool = False
) -> RunOutcome:
    """Run ``opts.input_path`` of kind ``source_name`` into ``opts.out``, analysis included.

    ``k_given``: the user chose ``cfg.analysis.k``, so a k the listed tracks cannot hold is an
    error before Ray starts (``check_k_fits``; a default k is clamped by the analysis)."""
    import dataclasses

    started = time.perf_counter()
    source = get_source(source_name)
    cfg = dataclasses.replace(cfg, source=source.name)
    opts = dataclasses.replace(opts, recompute=check_recompute(opts.recompute, source, cfg))
    outguard.check_out_usable(opts.out)
    with outguard.hold_lock(opts.out):
        guard_out(opts, say)
        listing = source.list_inputs(opts, cfg, say)
        if k_given and not opts.no_analysis:
            check_k_fits(cfg.analysis.k, corpus_tracks(listing))
        keep = opts.keep_clusters and not opts.no_analysis
        keep = keep and check_keep_clusters(opts.out, cfg, source.products(cfg), say)
        forget_stale_tracks(opts.out, listing, say)
        pending = source.pending(listing, opts, cfg)
        if source.needs_ray and pending == 0:
            say(f"nothing left to compute: every track is already in {opts.out}")
        with ray_output_to(None if opts.verbose else ray_log_dir(opts.out)):
            ray_started = False
            if source.needs_ray and pending != 0:
                stages = [
                    functools.partial(importlib.import_module, m) for m in source.stage_modules(cfg)
                ]
                analysis = [] if opts.no_analysis else [import_analysis]
                with loading_meanwhile(*stages, *analysis):
                    ray_started = init_ray(
                        num_cpus=opts.num_cpus, verbose=opts.verbose, address=opts.address
                    )
            info = source.compute(listing, opts, cfg, say)
            source.post_steps(opts, cfg, info, say)
            stopping = None
            if ray_started and analysis_needs_no_ray(opts):
                stopping = stop_ray_in_background()  # the analysis runs serially meanwhile
            try:
                metrics = analysis_of_run(opts, cfg, keep, k_given, say)
            finally:
                if stopping is not None:
                    stopping.join()
        check_accounting(opts.out, source.products(cfg), analysed=metrics is not None)
    seconds = time.perf_counter() - started
    return RunOutcome(info, metrics, seconds, error_rate_exceeded(info, cfg))


@contextlib.contextmanager
def loading_meanwhile(*loaders: Callable[[], object]) -> Iterator[None]:
    """Call ``loaders`` (imports) in a thread while the block runs: the driver mostly waits
    while Ray starts (on its daemons) and while tracks compute (on the workers), so the
    imports of the next step fit beside it (bench/e2e.py). A module that fails to import
    fails again, with its error, where the run imports it."""

    def load() -> None:
        for loader in loaders:
            with contextlib.suppress(Exception):
                loader()

    thread = threading.Thread(target=load, name="soundclust-imports", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def analysis_needs_no_ray(opts: RunOptions) -> bool:
    """True when this run's analysis runs without Ray: none, or one too small for Ray tasks
    (``ray_executor.analysis_uses_ray``, the executor's own rule). Only asked with Ray up."""
    from soundclust_ray.ray_executor import analysis_uses_ray

    return opts.no_analysis or not analysis_uses_ray(out_tracks(opts.out))


def import_analysis() -> None:
    """The analysis's libraries (``analysis.driver.preload_libraries``)."""
    from soundclust_ray.analysis.driver import preload_libraries

    preload_libraries()


def analysis_of_run(
    opts: RunOptions, cfg: RunConfig, keep: bool, k_given: bool, say: Say
) -> dict | None:
    """A run's last step: none (``--no-analysis``), the new tracks placed into the saved fit
    (``--keep-clusters``), the last analysis when nothing changed, else a fresh analysis."""
    if opts.no_analysis:
        record_analysis_options(opts.out, cfg.analysis, opts.label_col)
        return None
    if keep:
        return place_into_saved_fit(opts.out, say)
    metrics = current_metrics(opts.out, cfg.analysis, opts.label_col)
    if metrics is not None:
        say(f"analysis: inputs and options unchanged; {opts.out} is current")
        return metrics
    return run_analysis(opts.out, cfg.analysis, opts.label_col, not opts.quiet, k_given=k_given)


def check_recompute(names: tuple[str, ...], source, cfg: RunConfig) -> tuple[str, ...]:
    """``--recompute`` names as products of this run (``timbre`` → ``features/timbre``,
    ``musicnn`` → ``embeddings/musicnn``), before any work; UserError for a name the run
    does not compute."""
    if not names:
        return ()
    products = source.products(cfg)
    if source.name != "audio":
        raise UserError(f"--recompute: --source {source.name} has one product; use --overwrite")
    short = {p.rsplit("/", 1)[-1]: p for p in products}
    resolved = []
    for name in names:
        product = name if name in products else short.get(name)
        if product is None:
            raise UserError(
                f"--recompute {name}: not a product of this run (products: {', '.join(products)})"
            )
        resolved.append(product)
    return tuple(dict.fromkeys(resolved))


def check_keep_clusters(out: str, cfg: RunConfig, products: list[str], say: Say) -> bool:
    """``run --keep-clusters``, before any work: True when OUT's saved clustering can take
    this run's new tracks; False (a first fit, said) when OUT has none yet; UserError when the
    run computes another matrix or asks for other analysis options than the saved fit."""
    from soundclust_ray.analysis import placing
    from soundclust_ray.analysis.placement import analysis_key, load_placement
    from soundclust_ray.analysis.search import NOT_GEOMETRY
    from soundclust_ray.config import to_dict

    model = load_placement(out) if outdir.exists(out, outdir.METRICS) else None
    if model is None:
        say(f"--keep-clusters: {out} has no saved clustering yet; fitting one")
        return False
    missing = [p for p in placing.model_products(model, out) if p not in products]
    if missing:
        raise UserError(
            f"--keep-clusters: the saved clustering of {out} is fitted on {', '.join(missing)}, "
            "which this run does not compute: give the options of the fit, or refit without "
            "--keep-clusters"
        )
    asked = analysis_key(to_dict(cfg.analysis), {})["config"]
    changed = sorted(k for k, v in asked.items() if model.key["config"].get(k) != v)
    geometry = [k for k in changed if k not in NOT_GEOMETRY]
    if geometry:
        raise UserError(
            "--keep-clusters places into the saved fit, whose matrix was made with other "
            f"options ({', '.join(geometry)}): drop them, or refit without --keep-clusters"
        )
    if changed:
        kept = ", ".join(f"{k} {model.key['config'].get(k)}" for k in changed)
        say(f"--keep-clusters: the saved fit's options are kept ({kept})")
    return True


def place_into_saved_fit(out: str, say: Say) -> dict:
    """``run --keep-clusters``'s analysis: the new tracks placed (``analysis/placing``)."""
    from soundclust_ray.analysis import placing

    try:
        metrics = placing.place_new_tracks(out)
    except placing.NothingToPlace:
        say(f"--keep-clusters: no new tracks; {out}'s clustering is unchanged")
        return outdir.read_json(out, outdir.METRICS)
    placed = metrics["placement"]
    say(
        f"--keep-clusters: {placed['last_placed']} new tracks placed into the fit of "
        f"{placed['fitted_tracks']} tracks (placed=True in {outdir.CLUSTERS})"
    )
    return metrics


def out_state(out: str) -> str:
    """What a run would find in OUT, read without writing (the checks of ``check_out_usable``
    and ``outguard.claim_out``): "new", "empty" or "soundclust"; UserError when the run would
    refuse OUT."""
    import pyarrow.fs as pafs

    fs, base = outdir.resolve(out)
    kind = fs.get_file_info(base).type
    if kind == pafs.FileType.NotFound:
        return "new"
    if kind != pafs.FileType.Directory:
        raise UserError(f"--out {out} is a file, not a folder")
    marker = outguard.read_marker(out)
    if marker is not None:
        if int(marker.get("format", 0)) > outguard.MARKER_FORMAT:
            raise UserError(
                f"--out {out} was written by a newer soundclust: upgrade or use a new --out"
            )
        return "soundclust"
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=False))
    entries = sorted(i.base_name for i in infos if i.base_name != outguard.LOCK)
    if not entries or entries == [outdir.CORPUS]:
        return "empty"
    if outdir.RUN in entries:
        return "soundclust"
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise UserError(
        f"--out {out} is not empty ({shown}) and was not written by soundclust: "
        "give a new or empty folder"
    )


def _readable_done_tracks(out: str, product: str, broken: list[str]) -> set[str]:
    """Track ids of ``product``'s readable shards (a run quarantines the ``broken`` ones)."""
    import pyarrow.parquet as pq

    from soundclust_ray import shards
    from soundclust_ray.pipeline import done_tracks

    if not broken:
        return done_tracks(out, product)
    fs, base = outdir.resolve(out)
    skip = {outdir.join(base, name) for name in broken}
    done: set[str] = set()
    for path in shards.list_shards(out, product):
        if path not in skip:
            done.update(pq.read_table(path, columns=["track_id"], filesystem=fs)[0].to_pylist())
    return done


def _plan_config(cfg: RunConfig, valid, out: str, state: str, overwrite: bool) -> RunConfig:
    """The config the run would compute with: the classic chunk cap as recorded in OUT, else
    from the manifest's header durations (the run probes the same headers on Ray)."""
    import numpy as np

    from soundclust_ray.features.classic import classic_chunk_cap
    from soundclust_ray.pipeline import needs_classic_cap, recorded_classic_cap, with_classic_cap

    if not needs_classic_cap(cfg, valid):
        return cfg
    cap = None if overwrite or state != "soundclust" else recorded_classic_cap(out)
    if cap is None:
        durations = np.asarray(valid.get("duration_sec", []), dtype=np.float64)
        finite = durations[np.isfinite(durations)]
        cap = classic_chunk_cap(finite, cfg.features.classic) if finite.size else 1
    return with_classic_cap(cfg, cap)


def probe_product(cfg: RunConfig, product: str, todo) -> dict:
    """Run up to ``DRY_RUN_PROBE_TRACKS`` of ``todo`` (rows: track_id, path) through the
    product's real stages in this process: set-up seconds, seconds per track, and Parquet
    bytes per written track (zstd, as the shard writer writes; one file's fixed footer apart)."""
    import io

    import numpy as np
    import pyarrow.parquet as pq

    from soundclust_ray.config import DRY_RUN_PROBE_TRACKS
    from soundclust_ray.stages.base import ERROR_FIELDS, NODE_FIELD
    from soundclust_ray.stages.inprocess import product_stage, track_batch
    from soundclust_ray.stages.writer import shard_table

    rows = todo.head(DRY_RUN_PROBE_TRACKS)
    batch = track_batch(rows["track_id"], rows["path"])
    setup, spec = product_stage(cfg, product)
    result: dict = {"tracks": len(rows)}
    try:
        t0 = time.perf_counter()
        compute = setup()
        t1 = time.perf_counter()
        out = compute(batch)
        t2 = time.perf_counter()
    except Exception as exc:  # noqa: BLE001 - a failed probe is reported, the plan goes on
        result["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return result
    failed = np.asarray(out["error_type"]).astype(str) != ""
    ids = np.asarray(out["track_id"]).astype(str)
    ok_ids = set(ids[~failed].tolist())
    messages = np.asarray(out["error_message"]).astype(str)[failed]
    first_error = messages[0] if len(messages) else ""
    result.update(
        setup_s=t1 - t0,
        s_per_track=(t2 - t1) / max(len(rows), 1),
        failed=len(set(ids[failed].tolist())),
        first_error=first_error,
    )
    columns = [c for c in out if c not in (*ERROR_FIELDS, NODE_FIELD, "path")]

    def parquet_bytes(mask) -> int:
        table = shard_table({c: np.asarray(out[c])[mask] for c in columns}, columns, spec)
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return sink.tell()

    if ok_ids:
        footer = parquet_bytes(np.zeros(len(failed), dtype=bool))
        result["footer_bytes"] = footer
        result["bytes_per_track"] = (parquet_bytes(~failed) - footer) / len(ok_ids)
    return result


def plan(source_name: str, opts: RunOptions, cfg: RunConfig, say: Say) -> dict:
    """``run --dry-run``: what :func:`execute` would find and do, without Ray and without
    writing to OUT (not even creating it). The inputs are listed as the run lists them, each
    product's tracks split into to-compute and resumed (changed files and unreadable shards
    recomputed, as the run would), and a few tracks to compute are probed in-process for a
    time and disk estimate (``probe_product``; audio inputs only)."""
    import dataclasses
    import math

    from soundclust_ray.config import DRY_RUN_EXAMPLES
    from soundclust_ray.pipeline import products_of
    from soundclust_ray.runinfo import check_out_dir

    source = get_source(source_name)
    if source.name != "audio":
        raise UserError(
            f"--dry-run plans audio inputs only for now ({source.name}: its listing is "
            "written into OUT or computed in one step on the driver)"
        )
    cfg = dataclasses.replace(cfg, source=source.name)
    opts = dataclasses.replace(opts, recompute=check_recompute(opts.recompute, source, cfg))
    state = out_state(opts.out)
    listing = source.list_inputs(opts, cfg, say)
    manifest = listing.frame
    valid = manifest[manifest["invalid_reason"] == ""]
    invalid = manifest[manifest["invalid_reason"] != ""]
    cfg = _plan_config(cfg, valid, opts.out, state, opts.overwrite)
    products = products_of(cfg)
    if not products:
        raise UserError("nothing to compute: give --features and/or --embed")
    resuming = state == "soundclust" and not opts.overwrite
    changed: set[str] = set()
    removed: set[str] = set()
    broken: dict[str, list[str]] = {}
    if resuming:
        check_out_dir(opts.out, cfg, products, opts.recompute)
        changed, removed = outguard.stale_tracks(opts.out, manifest)
        broken = {p: outguard.broken_shards(opts.out, p) for p in products}
    cpus = opts.num_cpus or len(os.sched_getaffinity(0))
    wanted = set(valid["track_id"])
    result: dict = {
        "input": opts.input_path,
        "out": opts.out,
        "out_state": state,
        "overwrite": opts.overwrite,
        "rows": len(manifest),
        "tracks": len(valid),
        "invalid": {
            "count": len(invalid),
            "reasons": invalid["invalid_reason"].value_counts().to_dict(),
            "examples": list(
                zip(invalid["path"].head(DRY_RUN_EXAMPLES), invalid["invalid_reason"], strict=False)
            ),
        },
        "changed": len(changed),
        "removed": len(removed),
        "broken_shards": [name for names in broken.values() for name in names],
        "cpus": cpus,
        "products": {},
    }
    total_s = total_bytes = 0.0
    for product in products:
        fresh = not resuming or product in opts.recompute
        done = set() if fresh else _readable_done_tracks(opts.out, product, broken[product])
        kept = (done & wanted) - changed
        todo = valid[~valid["track_id"].isin(kept)]
        entry: dict = {"todo": len(todo), "resumed": len(kept)}
        if len(todo):
            probe = probe_product(cfg, product, todo)
            entry["probe"] = probe
            if "s_per_track" in probe:
                entry["seconds"] = probe["setup_s"] + probe["s_per_track"] * len(todo) / cpus
                total_s += entry["seconds"]
            if "bytes_per_track" in probe:
                n_shards = math.ceil(len(todo) / cfg.shard_rows)
                entry["bytes"] = (
                    probe["bytes_per_track"] * len(todo) + probe["footer_bytes"] * n_shards
                )
                total_bytes += entry["bytes"]
        result["products"][product] = entry
    result["seconds"] = total_s
    result["bytes"] = total_bytes
    return result
