"""The one orchestrator of a run, the same for every source.

guard OUT → list the inputs (the source's manifest) → start Ray if the source needs it →
compute the products → the source's post-steps → the analysis → the error-rate check.
``cli.py`` parses arguments and prints; jobs call :func:`execute` the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from soundclust_ray import outdir, outguard, storage
from soundclust_ray.config import AnalysisConfig, RunConfig
from soundclust_ray.errors import UserError
from soundclust_ray.ray_env import init_ray, ray_output_to
from soundclust_ray.runinfo import (
    error_rate_exceeded,
    last_analysis_options,
    products_in_out,
    record_analysis_options,
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
    soundclust's own files with ``--overwrite``, unreadable shards moved to OUT/quarantine."""
    inputs = [storage.local_path(opts.input_path)]
    marker = outguard.claim_out(opts.out, inputs)
    if opts.overwrite:
        outguard.remove_owned(opts.out, marker, inputs)
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
    for product in products_in_out(out):
        outguard.drop_tracks(out, product, changed | removed)
    say(
        f"resume: {len(changed)} changed files recomputed, {len(removed)} tracks no longer in "
        "the input dropped from OUT"
    )


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

    if k_given:
        check_k_fits(cfg.k, out_tracks(out))
    for product in products_in_out(out):
        broken = outguard.broken_shards(out, product)
        if broken:
            raise UserError(
                f"{outdir.path(out, broken[0])} is unreadable (truncated or corrupt): "
                "`soundclust run` again moves it to quarantine/ and recomputes its tracks"
            )
    try:
        metrics = analyze(out, cfg, label_col=label_col, progress=progress)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from exc
    record_analysis_options(out, cfg, label_col, analysis_inputs_key(out, cfg, label_col))
    return metrics


def analysis_inputs_key(out: str, cfg: AnalysisConfig, label_col: str | None) -> str:
    """What an analysis of OUT depends on: its options, the label column, the manifest and
    error table as written, and every committed shard's name, size and modification time (a
    shard is only ever replaced whole, by an atomic rename)."""
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
    head = {"config": to_dict(cfg), "label_col": label_col, "shards": listing}
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
    outguard.check_out_usable(opts.out)
    with outguard.hold_lock(opts.out):
        guard_out(opts, say)
        listing = source.list_inputs(opts, cfg, say)
        if k_given and not opts.no_analysis:
            check_k_fits(cfg.analysis.k, corpus_tracks(listing))
        forget_stale_tracks(opts.out, listing, say)
        pending = source.pending(listing, opts, cfg)
        if source.needs_ray and pending == 0:
            say(f"nothing left to compute: every track is already in {opts.out}")
        with ray_output_to(None if opts.verbose else outdir.path(opts.out, outdir.LOGS)):
            if source.needs_ray and pending != 0:
                init_ray(num_cpus=opts.num_cpus, verbose=opts.verbose, address=opts.address)
            info = source.compute(listing, opts, cfg, say)
            source.post_steps(opts, cfg, info, say)
        metrics = None
        if opts.no_analysis:
            record_analysis_options(opts.out, cfg.analysis, opts.label_col)
        else:
            metrics = current_metrics(opts.out, cfg.analysis, opts.label_col)
            if metrics is None:
                metrics = run_analysis(
                    opts.out, cfg.analysis, opts.label_col, not opts.quiet, k_given=k_given
                )
            else:
                say(f"analysis: inputs and options unchanged; {opts.out} is current")
    seconds = time.perf_counter() - started
    return RunOutcome(info, metrics, seconds, error_rate_exceeded(info, cfg))
