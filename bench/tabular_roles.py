"""Tables as people have them: `similar` genre precision@10 with a role's column renamed.

The Spotify playlist table of issue 16 (32k rows, ``track_popularity``) is not on this machine,
so the same situation is built from the real Spotify artists table in shared/data: its rows
whose genres fall in exactly one of the playlist table's six families (edm, latin, pop, r&b,
rap, rock) keep that family as their label. Three runs of the tabular source, each through the
CLI's own option parsing, then the search geometry ``similar`` uses (``clustered_matrix``):

- seed 003's recipe: the table as it is (``popularity`` under its own name);
- renamed: ``popularity`` renamed to ``artist_popularity``, a name nothing recognises, so the
  run skips the role ("missing optional: popularity");
- mapped: the renamed table with ``--column popularity=artist_popularity``.

Precision@10: for every row, the share of its 10 nearest other rows (cosine, exact) with its
label. The mapped run must give seed 003's vectors, hence its figure exactly.

    .venv/bin/python bench/tabular_roles.py
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from soundclust_ray.analysis.search import clustered_matrix
from soundclust_ray.cli import build_parser, run_config
from soundclust_ray.config import AnalysisConfig
from soundclust_ray.sources.tabular import run_tabular

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not (DATA / "tabular").is_dir():
    DATA = Path("/work/shared/data")
ARTISTS = DATA / "tabular" / "spotify_artists_audio_features.csv"
FAMILIES = {
    "edm": r"\b(?:edm|house|techno|trance|electro|dubstep|big room)\b",
    "latin": r"\b(?:latin|reggaeton|salsa|bachata|cumbia|tropical)\b",
    "pop": r"\bpop\b",
    "r&b": r"\b(?:r&b|soul|neo soul)\b",
    "rap": r"\b(?:rap|hip hop|trap)\b",
    "rock": r"\brock\b",
}
"""The playlist table's six genres, as words in the artists table's genre lists."""


def labelled_artists() -> pd.DataFrame:
    """Artists whose genres name exactly one family, with that family as ``genre``."""
    table = pd.read_csv(ARTISTS)
    hits = pd.DataFrame(
        {f: table["genres"].str.contains(p, flags=re.I, regex=True) for f, p in FAMILIES.items()}
    )
    one = hits.sum(axis=1) == 1
    table = table[one].copy()
    table["genre"] = hits[one].idxmax(axis=1)
    return table.drop(columns=["genres"]).reset_index(drop=True)


def precision_at_10(out: str) -> tuple[float, int]:
    """Leave-one-out genre precision@10 in ``similar``'s geometry, and the vector width."""
    ids, X, _ = clustered_matrix(out, AnalysisConfig(matrix="tabular"))
    manifest = pd.read_parquet(Path(out) / "manifest.parquet", columns=["track_id", "genre"])
    genre = manifest.set_index("track_id")["genre"].reindex(ids.astype(str)).to_numpy()
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    _, nearest = index.search(X, 11)
    others = np.array([row[row != i][:10] for i, row in enumerate(nearest)])
    return float((genre[others] == genre[:, None]).mean()), X.shape[1]


def tabular_run(table: pd.DataFrame, work: Path, name: str, options: list[str]) -> dict:
    """One tabular run of ``table`` with these ``run`` options; its report and precision."""
    path = work / f"{name}.csv"
    table.to_csv(path, index=False)
    out = work / name
    args = build_parser().parse_args(
        ["run", str(path), "--out", str(out), "--source", "tabular", *options]
    )
    report = run_tabular(str(path), str(out), run_config(args))
    p10, dims = precision_at_10(str(out))
    return {"p@10": p10, "dims": dims, "missing": report["missing_optional"], "report": report}


def main() -> None:
    table = labelled_artists()
    counts = table["genre"].value_counts().to_dict()
    print(f"{len(table)} artists in six genre families: {counts}")
    renamed = table.rename(columns={"popularity": "artist_popularity"})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = {
            "seed 003 recipe": tabular_run(table, work, "seed", []),
            "renamed, skipped": tabular_run(renamed, work, "renamed", []),
            "renamed + --column": tabular_run(
                renamed, work, "mapped", ["--column", "popularity=artist_popularity"]
            ),
        }
    chance = float((table["genre"].value_counts(normalize=True) ** 2).sum())
    print(f"chance precision (same-genre share of random pairs): {chance:.3f}")
    for name, r in runs.items():
        filled = r["report"]["renamed_columns"]
        print(
            f"  {name:<20} {r['dims']:>2}-d  genre precision@10 {r['p@10']:.3f}  "
            f"missing optional: {', '.join(r['missing']) or 'none'}  roles filled: {filled}"
        )
    seed, mapped = runs["seed 003 recipe"]["p@10"], runs["renamed + --column"]["p@10"]
    print(f"mapped / seed recipe: {mapped / seed:.4f}")


if __name__ == "__main__":
    main()
