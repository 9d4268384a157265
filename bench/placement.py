"""Placing new tracks vs refitting (issue #16 item 10), on real GTZAN features.

    .venv/bin/python bench/placement.py [--csv ../shared/data/tabular/gtzan_features_30_sec.csv]
                                        [--held-out 0.2] [--k 10] [--workdir DIR]

The librosa features of the 999 GTZAN clips become feature shards of an OUT (no audio, no Ray).
A seeded 80 % are analysed (the fit), the other 20 % are added as a new shard and placed
(``soundclust place``), then the same OUT is analysed again from scratch (the refit of 100 %,
the reference, in the same run). Prints the time of place vs the refit, and how well the placed
k-means labels agree with the refit's labels for the same tracks: NMI, and the fraction equal
after matching the fit's cluster ids to the refit's (Hungarian, on the 80 % both labelled);
also how far the refit moved the 80 % (what placement avoids), and NMI with the genres.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score as nmi

from soundclust_ray import outdir, shards
from soundclust_ray.analysis.driver import analyze
from soundclust_ray.analysis.placing import place_new_tracks
from soundclust_ray.config import AnalysisConfig

CSV = Path(__file__).resolve().parents[2] / "shared/data/tabular/gtzan_features_30_sec.csv"


def write_out(out: str, table: pd.DataFrame, fit: np.ndarray) -> None:
    """Manifest of every clip; feature shard of the ``fit`` rows (the rest: later)."""
    fs, base = shards.resolve(out)
    manifest = pd.DataFrame({"track_id": table["filename"], "path": table["filename"]})
    manifest["genre"] = table["label"].to_numpy()
    shards.write_table_atomic(fs, f"{base}/{outdir.MANIFEST}", pa.Table.from_pandas(manifest))
    write_shard(out, table[fit])


def write_shard(out: str, rows: pd.DataFrame) -> None:
    fs, base = shards.resolve(out)
    numeric = rows.drop(columns=["filename", "label", "length"], errors="ignore")
    cols = {"track_id": pa.array(rows["filename"].to_numpy())}
    cols.update({f"librosa__{c}": pa.array(numeric[c].to_numpy(np.float32)) for c in numeric})
    shards.write_table_atomic(fs, shards.new_shard_path(base, outdir.FEATURES), pa.table(cols))


def labels(out: str) -> pd.DataFrame:
    return pq.read_table(outdir.path(out, outdir.CLUSTERS)).to_pandas().set_index("track_id")


def matched(a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    """Cluster id of ``a`` → the id of ``b`` it overlaps most (one-to-one, Hungarian)."""
    k = int(max(a.max(), b.max())) + 1
    counts = np.zeros((k, k))
    np.add.at(counts, (a, b), 1)
    rows, cols = linear_sum_assignment(-counts)
    return dict(zip(rows.tolist(), cols.tolist(), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", default=str(CSV))
    parser.add_argument("--held-out", type=float, default=0.2)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    table = pd.read_csv(args.csv)
    rng = np.random.default_rng(0)
    held = rng.random(len(table)) < args.held_out
    out = str(Path(args.workdir or tempfile.mkdtemp()) / "out")
    write_out(out, table, ~held)
    cfg = AnalysisConfig(matrix="features", k=args.k, report=False, duplicates=False)
    t0 = time.perf_counter()
    analyze(out, cfg, label_col="genre", progress=False)
    fit_s = time.perf_counter() - t0
    fit = labels(out)
    write_shard(out, table[held])
    t0 = time.perf_counter()
    place_new_tracks(out)
    place_s = time.perf_counter() - t0
    placed = labels(out)
    t0 = time.perf_counter()
    analyze(out, cfg, label_col="genre", progress=False)
    refit_s = time.perf_counter() - t0
    refit = labels(out)
    old, new = fit.index, placed.index[placed["placed"]]
    ids = matched(fit["kmeans"].to_numpy(), refit.loc[old, "kmeans"].to_numpy())
    same_old = np.mean(
        [ids[a] == b for a, b in zip(fit["kmeans"], refit.loc[old, "kmeans"], strict=True)]
    )
    p, r = placed.loc[new, "kmeans"].to_numpy(), refit.loc[new, "kmeans"].to_numpy()
    same_new = np.mean([ids[a] == b for a, b in zip(p, r, strict=True)])
    genre = table.set_index("filename")["label"]
    print(f"tracks: fit {len(old)}, placed {len(new)}, k {args.k}")
    print(
        f"seconds: fit 80 % {fit_s:.2f}, place {place_s:.3f}, refit 100 % {refit_s:.2f} "
        f"(place / refit = {place_s / refit_s:.4f}, {refit_s / place_s:.0f}x faster)"
    )
    print(
        f"placed vs refit labels of the {len(new)} new tracks: NMI {nmi(p, r):.3f}, "
        f"equal after matching ids {same_new:.3f}"
    )
    print(
        f"refit vs fit labels of the {len(old)} old tracks: NMI "
        f"{nmi(fit['kmeans'], refit.loc[old, 'kmeans']):.3f}, equal after matching {same_old:.3f}"
    )
    print(
        f"NMI with genre, new tracks: placed {nmi(genre[new], p):.3f}, "
        f"refit {nmi(genre[new], r):.3f}"
    )
    print(
        f"HDBSCAN placed vs refit (new tracks): NMI "
        f"{nmi(placed.loc[new, 'hdbscan'], refit.loc[new, 'hdbscan']):.3f}; refit vs fit "
        f"(old tracks): NMI {nmi(fit['hdbscan'], refit.loc[old, 'hdbscan']):.3f}"
    )


if __name__ == "__main__":
    main()
