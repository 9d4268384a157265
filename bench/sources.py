"""Non-audio sources: MSD files/s (Ray Data stage vs serial loop) and tabular rows/s vs pandas.

MSD: the 4 real MSD track files of ``shared/data/msd`` copied to a few hundred files; the serial
loop calls ``msd_track_row`` per file (seed 004 reads files one by one the same way), the Ray side
runs ``MsdStage`` on an actor pool over ``ray.data.from_items`` (Ray start-up timed apart).

Tabular: the Spotify artists sample tiled to 1.7M rows (plus id, explicit and year columns so
every seed-003 step runs) and written as Parquet. The reference is seed 003's plain pandas code
(``read_parquet`` → StandardScaler → weights → key/mode/explicit → year → ``np.save`` +
``id_to_index.json``); the pipeline is ``run_tabular`` (vectors + manifest + embedding parts +
id_to_index.json). Both run here on the same file; the vectors must be identical. A Ray Data
``read_parquet`` of the same file is timed to show why ``run_tabular`` reads with pyarrow.

    .venv/bin/python bench/sources.py [--quick] [--files N] [--tile N] [--skip-msd|--skip-tabular]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from soundclust_ray import shards
from soundclust_ray.config import RunConfig
from soundclust_ray.sources.msd_h5 import msd_columns, msd_track_row
from soundclust_ray.sources.tabular import run_tabular
from soundclust_ray.stages.msd import MsdStage

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not (DATA / "msd").is_dir():
    DATA = Path("/work/shared/data")
TABULAR_GOAL = 1.5
"""The pipeline may take at most this many times the plain pandas time."""


def msd_bench(n_files: int, tmp: Path) -> None:
    import ray

    sources = sorted((DATA / "msd").glob("*.h5"))
    folder = tmp / "msd"
    folder.mkdir()
    paths = []
    for i in range(n_files):
        src = sources[i % len(sources)]
        dst = folder / f"{src.stem}_{i:05d}.h5"
        shutil.copyfile(src, dst)
        paths.append(str(dst))
    cfg = RunConfig()

    t0, c0 = time.perf_counter(), time.process_time()
    serial = [msd_track_row(p, cfg.msd) for p in paths]
    t_serial = time.perf_counter() - t0
    cpu_ms = (time.process_time() - c0) / n_files * 1e3

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t0
    ray.data.DataContext.get_current().enable_progress_bars = False
    items = [{"track_id": Path(p).stem, "path": p} for p in paths]
    t0 = time.perf_counter()
    ds = ray.data.from_items(items, override_num_blocks=8).map_batches(
        MsdStage,
        fn_constructor_args=(cfg,),
        batch_size=cfg.msd.batch_size,
        concurrency=2,
        batch_format="numpy",
    )
    rows = {}
    t_first = None
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        if t_first is None:
            t_first = time.perf_counter() - t0
        for j, tid in enumerate(batch["track_id"]):
            rows[str(tid)] = batch["msd_beats_start__mean"][j]
    t_ray = time.perf_counter() - t0
    ray.shutdown()
    assert len(rows) == n_files
    same = all(
        rows[Path(p).stem] == serial[i]["msd_beats_start__mean"] for i, p in enumerate(paths)
    )

    print(f"MSD: {n_files} files, {len(msd_columns())} statistics each")
    rate = n_files / t_serial
    print(f"  serial loop (1 process)     {rate:8.1f} files/s   ({cpu_ms:.1f} ms CPU/file)")
    print(
        f"  Ray Data MsdStage (2 actors) {n_files / t_ray:7.1f} files/s   "
        f"ratio {t_serial / t_ray:.2f}×   (+ {t_init:.1f} s Ray start-up)   identical: {same}"
    )
    print(f"    first batch out after {t_first:.1f} s (actor start-up, imports)")


def seed_003(src: Path, out: Path) -> np.ndarray:
    """Seed 003's cells as written (data loading from the benchmark file)."""
    spotify = pd.read_parquet(src)
    audio_features = [
        "danceability", "energy", "valence", "tempo", "acousticness",
        "instrumentalness", "liveness", "speechiness", "loudness", "popularity",
    ]  # fmt: skip
    scaler = StandardScaler()
    Z = scaler.fit_transform(spotify[audio_features]).astype("float32")
    weights = np.array([1.2, 1.2, 1.0, 1.0, 0.8, 0.8, 0.7, 0.6, 0.5, 1.0], dtype="float32")
    Z_weighted = Z * weights
    cat_emb = spotify[["key", "mode", "explicit"]].astype("float32").values
    year_scaled = StandardScaler().fit_transform(spotify[["year"]]).astype("float32")
    embeddings = np.concatenate([Z_weighted, cat_emb, year_scaled], axis=1).astype("float32")
    np.save(out / "spotify_vectors_14d.npy", embeddings)
    id_to_index = {tid: i for i, tid in enumerate(spotify["id"])}
    with open(out / "id_to_index.json", "w") as f:
        json.dump(id_to_index, f)
    return embeddings


def tabular_bench(tile: int, tmp: Path) -> None:
    base = pd.read_csv(DATA / "tabular" / "spotify_artists_audio_features.csv")
    table = pd.concat([base] * tile, ignore_index=True)
    rng = np.random.default_rng(0)
    table["id"] = [f"trk{i:08d}" for i in range(len(table))]
    table["explicit"] = rng.random(len(table)) < 0.1
    table["year"] = rng.integers(1921, 2021, len(table))
    src = tmp / "tracks.parquet"
    table.to_parquet(src, index=False)
    n = len(table)
    del table, base

    ref_out = tmp / "seed"
    ref_out.mkdir()
    t0 = time.perf_counter()
    ref = seed_003(src, ref_out)
    t_ref = time.perf_counter() - t0

    out = tmp / "out"
    t0 = time.perf_counter()
    counts = run_tabular(str(src), str(out), RunConfig())
    t_pipe = time.perf_counter() - t0
    X = np.vstack(
        [
            shards.embedding_matrix(t.column("embedding"))
            for t in shards.iter_shard_tables(str(out), "embeddings/tabular", ["embedding"])
        ]
    )
    identical = bool(np.array_equal(X, ref))
    same_ids = json.loads((out / "id_to_index.json").read_text()) == json.loads(
        (ref_out / "id_to_index.json").read_text()
    )

    import pyarrow.parquet as pq
    import ray

    t0 = time.perf_counter()
    pq.read_table(src)
    t_arrow = time.perf_counter() - t0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.get(ray.data.read_parquet(str(src)).to_arrow_refs())  # warm-up: Ray Data's own start
    t0 = time.perf_counter()
    ray.get(ray.data.read_parquet(str(src)).to_arrow_refs())
    t_ray_read = time.perf_counter() - t0
    ray.shutdown()

    ratio = t_pipe / t_ref
    print(f"tabular: {n:,} rows → {counts['dims']}-d vectors")
    print(f"  seed 003 plain pandas   {n / t_ref:12,.0f} rows/s   {t_ref:6.2f} s")
    print(
        f"  run_tabular (pyarrow)   {n / t_pipe:12,.0f} rows/s   {t_pipe:6.2f} s   "
        f"ratio {ratio:.2f}× the pandas time (goal ≤ {TABULAR_GOAL}×: "
        f"{'met' if ratio <= TABULAR_GOAL else 'NOT met'})"
    )
    print(f"    steps: {counts['seconds']}   vectors identical: {identical}   ids: {same_ids}")
    print(f"  reading alone: pyarrow {t_arrow:.2f} s, Ray Data read_parquet {t_ray_read:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 MSD files, 287k rows")
    parser.add_argument("--files", type=int, default=None, help="MSD files (default 400)")
    parser.add_argument("--tile", type=int, default=None, help="copies of the CSV (default 60)")
    parser.add_argument("--skip-msd", action="store_true")
    parser.add_argument("--skip-tabular", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sources-") as tmp:
        if not args.skip_msd:
            msd_bench(args.files or (100 if args.quick else 400), Path(tmp))
        if not args.skip_tabular:
            tabular_bench(args.tile or (10 if args.quick else 60), Path(tmp))


if __name__ == "__main__":
    main()
