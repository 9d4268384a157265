"""``soundclust place OUT`` (and ``run --keep-clusters``): tracks added since the last analysis
join its clusters and maps, and nothing that was there moves.

The tracks to place are those with rows in the saved model's product(s) but not yet in
OUT/clusters.parquet. They are assigned by ``placement.place`` (nearest k-means centre; HDBSCAN's
approximate_predict rule on the saved tree; UMAP position from the nearest saved training rows;
the PCA map's saved axes) and
appended to clusters.parquet with ``placed=True``; the rows already there are written back
unchanged (same values, same order; ``placed=False`` added to a file that had no such column).

metrics.json, cluster_summaries.json and the quality scores stay those of the last fit, on
purpose: silhouette, sizes and label agreement describe what k-means and HDBSCAN found, and
mixing placed rows into them would report a fit that never ran. metrics.json gains a
``placement`` record (tracks fitted, tracks placed, seconds) and a note saying so; the report
is redrawn so its maps show the placed tracks, with the same note.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa

from soundclust_ray import outdir, shards
from soundclust_ray.analysis import gather, placement
from soundclust_ray.errors import UserError

PLACED = "placed"
"""clusters.parquet column: True for a track placed into a saved fit, False for a fitted one."""


class NothingToPlace(UserError):
    """Every track with shards in OUT is already in clusters.parquet."""


def model_products(model: placement.PlacementModel, out: str) -> list[str]:
    """The shard products the model's raw rows are read from."""
    key = model.key
    products = []
    if key.get("matrix") in ("features", "both"):
        products.extend(placement.feature_products(model, out))
    products += [outdir.embeddings_product(b) for b in placement.backends_of(key)]
    return products


def load_model(out: str) -> placement.PlacementModel:
    """The saved model of OUT's last analysis; UserError when there is none or it is stale."""
    model = placement.load_placement(out)
    if model is None:
        raise UserError(
            f"{out} has no saved clustering to place tracks into "
            f"({outdir.fitted_file(placement.META)}): run `soundclust analyze {out}` first"
        )
    return model


def tracks_in_shards(out: str) -> set[str]:
    """Track ids with a row in any product of OUT."""
    from soundclust_ray.runinfo import products_in_out

    found: set[str] = set()
    for product in products_in_out(out):
        found.update(shards.read_column(out, product).to_pylist())
    return found


def rows_to_place(out: str, model: placement.PlacementModel, known: set[str]) -> gather.Gathered:
    """The raw rows of tracks not in ``known``; NothingToPlace / UserError (another matrix)."""
    raw = placement.raw_rows(out, model)
    new = set(raw.track_ids.astype(str).tolist()) - known
    if new:
        return placement.keep_tracks(raw, new)
    others = tracks_in_shards(out) - known
    if others:
        wanted = " and ".join(model_products(model, out))
        raise UserError(
            f"{len(others)} tracks added to {out} have no {wanted} rows, the matrix the saved "
            "clustering was fitted on (another backend or features?): run them with the "
            "options of the fit, or refit with `soundclust analyze`"
        )
    raise NothingToPlace(
        f"nothing new to place: every track with shards in {out} is already in {outdir.CLUSTERS}"
    )


def _top_tags(new: gather.Gathered, n_tracks: int, top: int) -> list[str]:
    from soundclust_ray.analysis.driver import _top_tags_text

    pooled = gather.pool_windows(new)
    if pooled.tags is None:
        return [""] * n_tracks
    return _top_tags_text(pooled.tags, top)


def new_rows_table(
    old: pa.Table, placed: dict, manifest: pd.DataFrame, top_tags: list[str]
) -> pa.Table:
    """The placed tracks as rows of ``old``'s schema (manifest metadata joined), placed=True."""
    frame = pd.DataFrame({"track_id": np.asarray(placed["track_id"]).astype(str)})
    frame = frame.merge(manifest, on="track_id", how="left")
    for name in ("kmeans", "hdbscan", "umap_x", "umap_y", "pca_x", "pca_y"):
        frame[name] = placed[name]
    frame["top_tags"] = top_tags
    columns = {}
    for f in old.schema:
        if f.name == PLACED:
            continue
        values = frame[f.name] if f.name in frame.columns else pd.Series([None] * len(frame))
        columns[f.name] = pa.array(values, type=f.type, from_pandas=True)
    columns[PLACED] = pa.array(np.ones(len(frame), dtype=bool))
    return pa.table(columns)


def with_placed_column(old: pa.Table) -> pa.Table:
    """``old`` with ``placed`` (False: fitted) when it has none; its values untouched."""
    if PLACED in old.column_names:
        return old
    return old.append_column(PLACED, pa.array(np.zeros(old.num_rows, dtype=bool)))


def place_new_tracks(out: str) -> dict:
    """Place OUT's new tracks into its saved fit; returns the updated metrics."""
    from soundclust_ray.config import AnalysisConfig

    started = time.perf_counter()
    model = load_model(out)
    old = outdir.read_table(out, outdir.CLUSTERS)
    if old is None:
        raise UserError(f"{out} has no {outdir.CLUSTERS}: run `soundclust analyze {out}`")
    known = set(old.column("track_id").to_pylist())
    new = rows_to_place(out, model, known)
    placed = placement.place(model, new.X, new.track_ids)
    tags = _top_tags(new, len(placed["track_id"]), AnalysisConfig.summary_top_values)
    added = new_rows_table(old, placed, gather.read_manifest(out), tags)
    table = pa.concat_tables([with_placed_column(old), added])
    outdir.write_table(out, outdir.CLUSTERS, table)
    metrics = record_placement(out, model, table, len(added), time.perf_counter() - started)
    redraw_report(out, metrics, table)
    return metrics


def record_placement(
    out: str, model: placement.PlacementModel, table: pa.Table, n_new: int, seconds: float
) -> dict:
    """metrics.json with its ``placement`` record and note (the rest: as of the last fit)."""
    from soundclust_ray.analysis.driver import _write_json

    metrics = outdir.read_json(out, outdir.METRICS)
    n_placed = int(np.sum(table.column(PLACED).to_numpy(zero_copy_only=False)))
    fitted = int(model.key.get("n_tracks") or table.num_rows - n_placed)
    metrics["placement"] = {
        "fitted_tracks": fitted,
        "placed_tracks": n_placed,
        "last_placed": n_new,
        "seconds": round(seconds, 4),
        "how": "k-means: nearest saved centre; HDBSCAN: "
        + ("approximate_predict on the saved tree" if model.hdbscan_tree else "nearest rows' vote")
        + f"; UMAP: the {model.neighbours} nearest saved training rows; PCA map: the saved axes",
    }
    note = (
        f"{n_placed} tracks placed into the fit of {fitted} tracks by `soundclust place` "
        "(placed=True in clusters.parquet); scores, cluster sizes and summaries are of the fit"
    )
    notes = [n for n in metrics.get("notes") or [] if "by `soundclust place`" not in n]
    metrics["notes"] = [*notes, note]
    _write_json(out, outdir.METRICS, metrics)
    return metrics


def redraw_report(out: str, metrics: dict, table: pa.Table) -> None:
    """OUT/report.html again, its maps with the placed tracks (when the fit wrote one)."""
    if not outdir.exists(out, outdir.REPORT):
        return
    from soundclust_ray.analysis.search import config_from_dict
    from soundclust_ray.report import write_report

    summaries = outdir.read_json(out, outdir.SUMMARIES)
    run = outdir.read_json(out, outdir.RUN)
    cfg = config_from_dict(metrics.get("config") or {})
    write_report(out, metrics, table.to_pandas(), summaries, run, cfg)
