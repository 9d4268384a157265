"""Queries from outside the corpus — a sound file, a text — answered in a run's search geometry.

``similar OUT --audio FILE…``: each file goes through the run's own stages in this process
(``stages.inprocess``, the classes a run's actors use, with OUT/run.json's config), giving the
raw rows a corpus track has in its shards; the analysis's saved transform
(``placement.search_vectors``: standardization, centring + L2, block weights, PCA, then L2) puts
them in the geometry of the index, and the FAISS index of OUT answers.

``similar OUT --text WORDS``: CLAP's text tower (``embed.clap.load_clap_text``, from the run's
CLAP source) embeds the words into the space of CLAP's audio vectors; they take the same
post-processing as an audio row of ``embeddings/clap`` and are ranked by cosine against the index
of that matrix, whatever matrix the run clustered.

No Ray: a query is a few files, and a model loads faster in this process than an actor starts.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa

from soundclust_ray import outdir, shards, storage
from soundclust_ray.analysis import gather, placement
from soundclust_ray.analysis.search import neighbour_table, open_index
from soundclust_ray.config import RunConfig, SearchConfig, from_dict
from soundclust_ray.embed.base import EmbedderLoadError
from soundclust_ray.errors import UserError

CLAP = "clap"


def run_config(out: str, products: tuple[str, ...] = ()) -> RunConfig:
    """The config the run computed with (OUT/run.json's ``config``); UserError without one, or
    when a later run of other options (``jobs/embed.py`` after ``jobs/extract_features.py``)
    left run.json a config that did not compute one of ``products`` (its recorded hash)."""
    from soundclust_ray.runinfo import product_hash, read_run_info

    info = read_run_info(out)
    if not info.get("config"):
        raise UserError(f"{out} has no run.json with a config: `soundclust run` it first")
    cfg = from_dict(RunConfig, info["config"])
    if cfg.source == "audio" and outdir.FEATURES in products:
        raise UserError(
            f"{out} has every feature family in features/ (an older soundclust's layout): "
            "`soundclust run` it once to upgrade it in place, then query again"
        )
    for product in products:
        recorded = (info.get("product_hashes") or {}).get(product)
        if recorded and recorded != product_hash(cfg, product):
            raise UserError(
                f"{out}/run.json's config is not the one that computed {product} (a later run "
                "changed it): query files cannot be computed the way the corpus was"
            )
    return cfg


def products_of_model(model, out: str) -> list[str]:
    """The products whose shards the clustered matrix (the placement model's) is read from."""
    features = model.key.get("matrix") in ("features", "both")
    products = placement.feature_products(model, out) if features else []
    return products + [outdir.embeddings_product(b) for b in placement.backends_of(model.key)]


def clustered_model(out: str):
    """The analysis's saved transform of raw rows (OUT/fitted/placement.*); UserError when the
    last analysis saved none or it is not that analysis's (placement.load_placement checks)."""
    model = placement.load_placement(out)
    if model is None:
        raise UserError(
            f"{out} has no saved analysis transform (OUT/fitted/): "
            f"run `soundclust analyze {out}` once, then query again"
        )
    return model


def missing_files(paths: list[str]) -> dict[str, str]:
    """{path: reason} of query files that are not there (checked before any model loads)."""
    import os

    import pyarrow.fs as pafs

    missing = {}
    for path in paths:
        if not storage.is_remote(path):
            local = storage.local_path(path)
            if not os.path.exists(local):
                missing[path] = "no such file"
            elif os.path.isdir(local):
                missing[path] = "is a folder, not a sound file"
            continue
        try:
            kind = storage.file_info(path).type
        except (OSError, ValueError) as exc:
            missing[path] = f"cannot open: {exc}".splitlines()[0]
            continue
        if kind == pafs.FileType.NotFound:
            missing[path] = "no such file"
        elif kind == pafs.FileType.Directory:
            missing[path] = "is a folder, not a sound file"
    return missing


def shard_like_table(batch: dict[str, np.ndarray], spec) -> pa.Table:
    """The succeeded rows of a stage's output batch as the shard writer writes them."""
    from soundclust_ray.stages.base import ERROR_FIELDS, NODE_FIELD
    from soundclust_ray.stages.writer import shard_table

    ok = np.asarray(batch["error_type"]).astype(str) == ""
    columns = [c for c in batch if c not in (*ERROR_FIELDS, NODE_FIELD, "path")]
    return shard_table({c: np.asarray(batch[c])[ok] for c in columns}, columns, spec)


def compute_files(
    cfg: RunConfig, products: list[str], paths: list[str]
) -> tuple[dict[str, pa.Table], dict[str, str]]:
    """Each product's shard-shaped rows of the query files (track id ``q<i>`` = ``paths[i]``),
    computed by the run's own stages in this process, and {path: first error} of the files
    that failed (a file failed in one product is left out of every product's rows)."""
    import pyarrow.compute as pc

    from soundclust_ray.stages.inprocess import product_stage, track_batch

    batch = track_batch([f"q{i}" for i in range(len(paths))], paths)
    tables: dict[str, pa.Table] = {}
    failed: dict[str, str] = {}
    for product in products:
        setup, spec = product_stage(cfg, product)
        try:
            compute = setup()
        except EmbedderLoadError as exc:  # the run's model moved or was deleted since
            raise UserError(f"{product}: {exc}".splitlines()[0]) from exc
        result = compute(batch)
        bad = np.asarray(result["error_type"]).astype(str) != ""
        ids = np.asarray(result["track_id"]).astype(str)
        messages = np.asarray(result["error_message"]).astype(str)
        for track_id, message in zip(ids[bad], messages[bad], strict=True):
            failed.setdefault(paths[int(track_id[1:])], message)
        tables[product] = shard_like_table(result, spec)
    bad_ids = pa.array([f"q{paths.index(p)}" for p in failed], pa.string())
    keep = {p: t.filter(pc.invert(pc.is_in(t["track_id"], bad_ids))) for p, t in tables.items()}
    return keep, failed


def query_vectors(model, tables: dict[str, pa.Table]) -> tuple[np.ndarray, np.ndarray]:
    """(query ids sorted, rows in the index's geometry) of the query files' shard-shaped rows:
    placement's own raw-row assembly and transform (``search_vectors``), one row per file."""
    families = [t for p, t in tables.items() if not p.startswith(outdir.EMBEDDINGS)]
    features = families[0] if families else None
    for table in families[1:]:
        features = features.join(table, "track_id")
    prefix = outdir.embeddings_product("")
    embeddings = {p[len(prefix) :]: t for p, t in tables.items() if p.startswith(prefix)}
    g = placement.raw_rows_from_tables(model, features=features, embeddings=embeddings or None)
    return np.unique(g.track_ids.astype(str)), placement.search_vectors(model, g.X, g.track_ids)


def similar_to_files(
    out: str,
    paths: list[str],
    k: int = 10,
    approximate: bool | None = None,
    search: SearchConfig | None = None,
) -> tuple[list[pd.DataFrame], dict[str, str]]:
    """One neighbour table per answered file, in the order given (``attrs['query']`` = its
    path), and {path: why} of the files that could not be answered (missing ones found before
    any model loads). UserError for what no file can change: no run config, no saved transform,
    a source other than audio, a model that no longer loads."""
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    paths = list(dict.fromkeys(str(p) for p in paths))
    model = clustered_model(out)
    products = products_of_model(model, out)
    cfg = run_config(out, tuple(products))
    if cfg.source != "audio":
        raise UserError(f"--audio needs a run of audio files; {out} is a {cfg.source} run")
    si = open_index(out, "auto", approximate, search)
    failed = missing_files(paths)
    todo = [p for p in paths if p not in failed]
    if not todo:
        return [], failed
    tables, bad = compute_files(cfg, products, todo)
    failed.update(bad)
    if len(failed) == len(paths):
        return [], failed
    query_ids, Q = query_vectors(model, tables)
    idx, sim = si.search(Q, k)
    answered = {todo[int(q[1:])]: j for j, q in enumerate(query_ids)}
    tables_out = []
    for path in paths:
        if path in answered:
            j = answered[path]
            table = neighbour_table(out, si, idx[j], sim[j])
            table.attrs.update(query=path)
            tables_out.append(table)
    return tables_out, {p: failed[p] for p in paths if p in failed}


def clap_transform(out: str, cfg):
    """Raw CLAP rows → the ``embeddings:clap`` index's vectors, as a placement model: the saved
    one when CLAP is the clustered matrix (its weights and PCA included); else the steps the
    analysis's own gathering fits on the CLAP shards (centring + L2; off the clustered matrix
    the index has no weights or PCA), read from OUT at each query."""
    from soundclust_ray.analysis.matrix import gather_matrix

    model = placement.load_placement(out)
    if model is not None and (model.key.get("matrix"), model.key.get("backend")) == (
        "embeddings",
        CLAP,
    ):
        return model
    g, _ = gather_matrix(out, cfg)
    empty = np.zeros((0, len(g.columns)), np.float32)
    key = {"matrix": "embeddings", "backend": CLAP}
    return placement.PlacementModel(
        g.steps,
        empty,
        empty,
        np.zeros(0, np.int32),
        np.zeros((0, 2), np.float32),
        columns=list(g.columns),
        key=key,
    )


def similar_to_text(
    out: str,
    text: str,
    k: int = 10,
    approximate: bool | None = None,
    search: SearchConfig | None = None,
) -> pd.DataFrame:
    """The k tracks whose CLAP audio embedding is nearest (cosine, in the ``embeddings:clap``
    index's geometry) to CLAP's embedding of ``text``; UserError when the run has no CLAP."""
    from soundclust_ray.analysis.search import run_analysis_config
    from soundclust_ray.embed.clap import load_clap_text
    from soundclust_ray.stages.embed import EMBEDDING

    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    if not text.strip():
        raise UserError("--text needs words, e.g. --text 'calm solo piano'")
    backends = gather.embedding_backends(out)
    if CLAP not in backends:
        has = f"embeddings of {', '.join(backends)}" if backends else "no embeddings"
        raise UserError(f"--text needs a run with --embed clap ({out} has {has})")
    clap = run_config(out, (outdir.embeddings_product(CLAP),)).embed.clap
    try:
        encoder = load_clap_text(clap)
    except EmbedderLoadError as exc:
        raise UserError(str(exc).splitlines()[0]) from exc
    vector = encoder.embed([text])
    si = open_index(out, f"embeddings:{CLAP}", approximate, search)
    model = clap_transform(out, run_analysis_config(out, f"embeddings:{CLAP}"))
    rows = pa.table({"track_id": ["text"], EMBEDDING: shards.embedding_array(vector)})
    g = placement.raw_rows_from_tables(model, embeddings=rows)
    idx, sim = si.search(placement.search_vectors(model, g.X, g.track_ids), k)
    table = neighbour_table(out, si, idx[0], sim[0])
    geometry = dict(table.attrs["geometry"])
    geometry["query"] = (
        f"CLAP text tower of {clap.model} (unit norm, then the audio embeddings' post-processing)"
    )
    table.attrs.update(query=f"text:{text}", geometry=geometry)
    table.attrs["title"] = f"nearest to the words {text!r} by cosine similarity"
    return table


def format_queries_json(tables: list[pd.DataFrame], failed: dict[str, str]) -> str:
    """Strict JSON of :func:`similar_to_files`: ``format_similar_json``'s object with ``query``
    the list of answered files, each neighbour naming its ``query``, and ``errors``."""
    from soundclust_ray.analysis.search import format_similar_json

    frames = [t.assign(query=t.attrs["query"]) for t in tables]
    joined = pd.concat(frames, ignore_index=True)
    joined = joined[["query", *[c for c in joined.columns if c != "query"]]]
    joined.attrs.update(tables[0].attrs, query=[t.attrs["query"] for t in tables])
    payload = json.loads(format_similar_json(joined))
    payload["errors"] = [{"query": path, "error": why} for path, why in failed.items()]
    return json.dumps(payload, indent=2, ensure_ascii=False)
