"""Clustering quality of every representation × clustering on the labelled development corpora.

Corpora (real audio, ``shared/data``): ``mer4q_genre`` (315 clips of 30 s, labels.csv with
``genre`` (7) and ``quadrant`` (4 emotion quadrants)) and ``gtzan_mini`` (37 clips, 10 genres in
the file names). For each representation (a feature family, a musicnn model's embedding or tag
logits, their ensembles and block fusions) and each clustering (k-means with k = number of
classes, spherical k-means, Ward, HDBSCAN) the table gives NMI and ARI against the labels, and
the leave-one-out kNN label precision@10 of the representation itself, averaged over 5 seeds.

The slow part (decoding, feature families, musicnn passes: minutes) runs once per corpus and
source and is cached under ``bench/.work/quality/``; the table itself takes seconds.

    nice -n 10 .venv/bin/python bench/quality.py [--recompute] [--corpus mer4q_genre ...]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from soundclust_ray.audio import load_audio  # noqa: E402
from soundclust_ray.config import AudioConfig, FeaturesConfig, MusicnnConfig  # noqa: E402

DATA = Path(os.environ.get("SOUNDCLUST_SHARED_DATA", REPO.parent / "shared" / "data"))
WORK = REPO / "bench" / ".work" / "quality"
FEATURE_FAMILIES = ("timbre", "classic", "soundspace")
MUSICNN_MODELS = ("MSD_musicnn", "MTT_musicnn")
SEEDS = (0, 1, 2, 3, 4)
AUDIO = AudioConfig()


@dataclass(frozen=True)
class Corpus:
    """A labelled corpus: track ids (paths relative to its root), paths and label columns."""

    name: str
    root: Path
    table: pd.DataFrame
    """``track_id``, ``path`` and one column per label kind."""
    label_kinds: tuple[str, ...]


def mer4q_genre() -> Corpus:
    root = DATA / "mer4q_genre"
    table = pd.read_csv(root / "labels.csv").sort_values("path", kind="stable")
    table = table.assign(track_id=table["path"], path=[str(root / p) for p in table["path"]])
    return Corpus("mer4q_genre", root, table.reset_index(drop=True), ("genre", "quadrant"))


def gtzan_mini() -> Corpus:
    root = DATA / "gtzan_mini"
    paths = sorted(root.glob("*.wav"))
    table = pd.DataFrame(
        {
            "track_id": [p.name for p in paths],
            "path": [str(p) for p in paths],
            "genre": [p.name.split(".")[0] for p in paths],
        }
    )
    return Corpus("gtzan_mini", root, table, ("genre",))


CORPORA = {"mer4q_genre": mer4q_genre, "gtzan_mini": gtzan_mini}


# --- the cached sources: one pass over the audio each ------------------------------------------


def _decode(path: str, rate: int) -> np.ndarray:
    return load_audio(path, rate, AUDIO.max_duration_s, AUDIO.min_duration_s)


def compute_feature_family(corpus: Corpus, family: str) -> dict[str, np.ndarray]:
    """One family's columns for every track (NaN rows where a track fails), as the stage does."""
    from soundclust_ray.features.registry import compute_family, decode_rates, get_families

    cfg = FeaturesConfig(families=(family,))
    fam = get_families(cfg.families)[0]
    rates = decode_rates([fam], cfg)
    columns = fam.columns(cfg)
    X = np.full((len(corpus.table), len(columns)), np.nan, dtype=np.float32)
    for i, path in enumerate(corpus.table["path"]):
        try:
            signals = {rate: _decode(path, rate) for rate in rates}
            values = compute_family(fam, signals, cfg)
            X[i] = [values[c] for c in columns]
        except Exception as exc:  # one bad clip is one NaN row, reported below
            print(f"  {corpus.name} {family}: {path}: {type(exc).__name__}: {exc}")
    return {"X": X, "columns": np.array(columns)}


def compute_musicnn_patches(corpus: Corpus, model: str) -> dict[str, np.ndarray]:
    """Per-patch penultimates (P, 200) and tag logits (P, 50) of every track, with offsets.

    Logits are the classifier's affine map of each patch's penultimate (the model's last
    layer before the sigmoid), so every pooling of either can be taken from the cache.
    """
    import torch

    from soundclust_ray.embed.musicnn import MusicnnEmbedder

    torch.set_num_threads(1)
    cfg = MusicnnConfig(model=model)
    embedder = MusicnnEmbedder(cfg, "cpu")
    pens, counts = [], []
    for path in corpus.table["path"]:
        try:
            out = embedder.embed_tracks([embedder.prepare(_decode(path, cfg.sample_rate))])[0]
            pens.append(out.embeddings)
        except Exception as exc:  # one bad clip: no patches, reported
            print(f"  {corpus.name} {model}: {path}: {type(exc).__name__}: {exc}")
            pens.append(np.zeros((0, 200), dtype=np.float32))
        counts.append(pens[-1].shape[0])
    P = np.concatenate(pens)
    with torch.inference_mode():
        logits = embedder.model.classifier(torch.from_numpy(P)).numpy()
    return {
        "penultimate": P,
        "logits": logits.astype(np.float32),
        "offsets": np.cumsum([0, *counts]),
        "tags": np.array(embedder.tag_names),
    }


VGG_MODELS = ("MSD_vgg", "MTT_vgg")
VGG_SUMMARIES = ("pool3", "pool4", "pool5", "logits")


def compute_vgg_layers(corpus: Corpus, model: str) -> dict[str, np.ndarray]:
    """Track summaries ("<layer>.mean", e.g. pool5.mean) of a vgg model: embed.extract_layers."""
    import torch

    from soundclust_ray.embed.musicnn import extract_layers

    torch.set_num_threads(1)
    rows: dict[str, list[np.ndarray]] = {}
    for path in corpus.table["path"]:
        out = extract_layers(_decode(path, 16000), 16000, model, VGG_SUMMARIES, ("mean",))
        for key, value in out.items():
            rows.setdefault(key, []).append(value)
    return {key: np.stack(values).astype(np.float32) for key, values in rows.items()}


SOURCES = {
    **{f: (lambda c, f=f: compute_feature_family(c, f)) for f in FEATURE_FAMILIES},
    **{m: (lambda c, m=m: compute_musicnn_patches(c, m)) for m in MUSICNN_MODELS},
    **{m: (lambda c, m=m: compute_vgg_layers(c, m)) for m in VGG_MODELS},
}


def load_source(corpus: Corpus, source: str, recompute: bool) -> dict[str, np.ndarray]:
    """A source's arrays from the cache, computed (and timed) first when absent or asked to."""
    path = WORK / corpus.name / f"{source}.npz"
    if recompute or not path.exists():
        t0 = time.perf_counter()
        arrays = SOURCES[source](corpus)
        seconds = time.perf_counter() - t0
        arrays["seconds_per_track"] = np.float64(seconds / len(corpus.table))
        arrays["track_id"] = corpus.table["track_id"].to_numpy().astype(str)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        print(f"  cached {corpus.name}/{source}: {seconds:.0f} s", flush=True)
    with np.load(path, allow_pickle=False) as z:
        arrays = dict(z)
    if list(arrays["track_id"]) != list(corpus.table["track_id"]):
        raise SystemExit(f"{path} is for another track list; rerun with --recompute")
    return arrays


# --- representations: blocks of the cached sources, fused by analysis/fusion.py ---------------


def patch_pool(arrays: dict[str, np.ndarray], layer: str, how: str) -> np.ndarray:
    """One row per track from a musicnn source's patches: mean, max or mean+std over patches;
    ``probs``: the mean over patches of the sigmoid of the logits — the tag probabilities the
    original musicnn ``extractor`` averages into its ``tags`` (what the shards store)."""
    P, offsets = arrays[layer], arrays["offsets"]
    rows = []
    for a, b in zip(offsets[:-1], offsets[1:], strict=True):
        part = P[a:b].astype(np.float64)
        if part.shape[0] == 0:
            rows.append(np.full(P.shape[1] * (2 if how == "meanstd" else 1), np.nan))
        elif how == "mean":
            rows.append(part.mean(axis=0))
        elif how == "max":
            rows.append(part.max(axis=0))
        elif how == "probs":
            rows.append((1.0 / (1.0 + np.exp(-part))).mean(axis=0))
        else:
            rows.append(np.concatenate([part.mean(axis=0), part.std(axis=0)]))
    return np.asarray(rows, dtype=np.float32)


def block(sources: dict, spec: str) -> np.ndarray:
    """``family`` → its feature columns; ``MODEL:layer:pool`` → a pooled musicnn output."""
    source, _, view = spec.partition(":")
    if not view:
        return sources[source]["X"]
    if "." in view:  # a vgg track summary, pooled by extract_layers
        return sources[source][view]
    layer, how = view.split(":")
    return patch_pool(sources[source], layer, how)


MSD, MTT = "MSD_musicnn", "MTT_musicnn"
EMB = {m: f"{m}:penultimate:mean" for m in MUSICNN_MODELS}
LOGIT = {m: f"{m}:logits:mean" for m in MUSICNN_MODELS}
PROBS = {m: f"{m}:logits:probs" for m in MUSICNN_MODELS}
FEATS = {f: f for f in FEATURE_FAMILIES}
REPRESENTATIONS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    # name: ({block name: source spec}, {block name: kind}); "joint" = one standardized block
    "timbre": ({"timbre": "timbre"}, {}),
    "classic": ({"classic": "classic"}, {}),
    "soundspace": ({"soundspace": "soundspace"}, {}),
    "3 families, columns": ({"all": "joint:timbre+classic+soundspace"}, {}),
    "3 families, fused": (FEATS, {}),
    **{
        f"{m} emb {how}": ({m: f"{m}:penultimate:{how}"}, {m: "direction"})
        for m in MUSICNN_MODELS
        for how in ("mean", "max", "meanstd")
    },
    **{f"{m} logits": ({m: LOGIT[m]}, {m: "center"}) for m in MUSICNN_MODELS},
    **{f"{m} tag probs": ({m: PROBS[m]}, {m: "direction"}) for m in MUSICNN_MODELS},
    "MSD+MTT tag probs": (PROBS, dict.fromkeys(PROBS, "direction")),
    "MSD tag probs+emb": (
        {"p": PROBS[MSD], "e": EMB[MSD]},
        {"p": "direction", "e": "direction"},
    ),
    "MSD+MTT tag probs+MSD emb": (
        {**PROBS, "e": EMB[MSD]},
        dict.fromkeys([*PROBS, "e"], "direction"),
    ),
    "MSD+MTT emb": (EMB, dict.fromkeys(EMB, "direction")),
    "MSD+MTT logits": (LOGIT, dict.fromkeys(LOGIT, "center")),
    "MSD+MTT logits, std": (LOGIT, dict.fromkeys(LOGIT, "standardize")),
    "MSD+MTT emb+logits": (
        {**{f"e{m}": EMB[m] for m in EMB}, **{f"l{m}": LOGIT[m] for m in LOGIT}},
        {**{f"e{m}": "direction" for m in EMB}, **{f"l{m}": "center" for m in LOGIT}},
    ),
    **{
        f"{m} {layer}": ({m: f"{m}:{layer}.mean"}, {m: "direction"})
        for m in VGG_MODELS
        for layer in ("pool4", "pool5")
    },
    **{f"{m} logits": ({m: f"{m}:logits.mean"}, {m: "center"}) for m in VGG_MODELS},
    **{f"{m} tag probs": ({m: f"{m}:tags.mean"}, {m: "direction"}) for m in VGG_MODELS},
    "MSD musicnn+vgg tag probs": (
        {"m": PROBS[MSD], "v": "MSD_vgg:tags.mean"},
        {"m": "direction", "v": "direction"},
    ),
    "4 models tag probs": (
        {**PROBS, **{m: f"{m}:tags.mean" for m in VGG_MODELS}},
        dict.fromkeys([*PROBS, *VGG_MODELS], "direction"),
    ),
    "MSD musicnn+vgg emb": (
        {"m": EMB[MSD], "v": "MSD_vgg:pool5.mean"},
        {"m": "direction", "v": "direction"},
    ),
    "4 models emb": (
        {**EMB, **{m: f"{m}:pool5.mean" for m in VGG_MODELS}},
        dict.fromkeys([*EMB, *VGG_MODELS], "direction"),
    ),
    "4 models logits": (
        {**LOGIT, **{m: f"{m}:logits.mean" for m in VGG_MODELS}},
        dict.fromkeys([*LOGIT, *VGG_MODELS], "center"),
    ),
    "timbre+MSD emb, columns": ({"j": f"joint:timbre+{EMB[MSD]}"}, {}),
    "timbre+MSD emb, fused": ({"t": "timbre", "e": EMB[MSD]}, {"e": "direction"}),
    "timbre+MSD+MTT logits": (
        {"t": "timbre", **LOGIT},
        dict.fromkeys(LOGIT, "center"),
    ),
    "3 families+MSD+MTT logits": (
        {**FEATS, **LOGIT},
        dict.fromkeys(LOGIT, "center"),
    ),
}


def representation(sources: dict, name: str) -> np.ndarray:
    """The matrix of a named representation (fusion rule of analysis/fusion.py)."""
    from soundclust_ray.analysis.fusion import fuse_blocks

    specs, kinds = REPRESENTATIONS[name]
    blocks = {}
    for block_name, spec in specs.items():
        if spec.startswith("joint:"):
            parts = [block(sources, s) for s in spec.removeprefix("joint:").split("+")]
            blocks[block_name] = np.concatenate(parts, axis=1)
        else:
            blocks[block_name] = block(sources, spec)
    return fuse_blocks(blocks, kinds=kinds)


def representation_cost(sources: dict, name: str) -> float:
    """Seconds per track of the cached sources a representation reads (measured when cached)."""
    names = set()
    for spec in REPRESENTATIONS[name][0].values():
        for part in spec.removeprefix("joint:").split("+"):
            names.add(part.partition(":")[0])
    return float(sum(sources[s]["seconds_per_track"] for s in names))


# --- clusterings and scores -----------------------------------------------------------------


METHODS = ("kmeans", "spherical", "ward", "hdbscan")


def cluster_all(X: np.ndarray, k: int, seeds=SEEDS) -> dict[str, list[np.ndarray]]:
    """Clustering name → labels per seed (deterministic methods: one labelling)."""
    from sklearn.cluster import AgglomerativeClustering

    from soundclust_ray.analysis.clustering import fit_hdbscan, fit_kmeans
    from soundclust_ray.config import AnalysisConfig

    unit = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    out: dict[str, list[np.ndarray]] = {"kmeans": [], "spherical": []}
    for seed in seeds:
        cfg = AnalysisConfig(random_state=seed)
        out["kmeans"].append(fit_kmeans(X, k, cfg)[0])
        out["spherical"].append(fit_kmeans(unit, k, cfg)[0])
    out["ward"] = [AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(X)]
    out["hdbscan"] = [fit_hdbscan(X, AnalysisConfig())[0]]
    return out


def knn_precision(X: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Leave-one-out: mean fraction of each track's k nearest (Euclidean) sharing its label."""
    sq = (X.astype(np.float64) ** 2).sum(axis=1)
    d = sq[:, None] + sq[None, :] - 2 * X.astype(np.float64) @ X.T.astype(np.float64)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
    return float((labels[nearest] == labels[:, None]).mean())


def score(X: np.ndarray, labels: np.ndarray, seeds=SEEDS) -> dict[str, dict[str, float]]:
    """Per clustering: mean NMI and ARI over seeds; plus the representation's kNN P@10."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    k = len(np.unique(labels))
    out = {}
    for method, runs in cluster_all(X, k, seeds).items():
        out[method] = {
            "nmi": float(np.mean([normalized_mutual_info_score(labels, r) for r in runs])),
            "ari": float(np.mean([adjusted_rand_score(labels, r) for r in runs])),
        }
    out["p@10"] = knn_precision(X, labels)
    return out


SUBSET_CLASSES, SUBSET_PER_CLASS, N_SUBSETS = 4, 22, 10
"""The hidden corpus has 4 balanced genres; mer4q_genre has 7 and 41 % PopRock (k-means splits
it). 10 of its 35 sets of 4 genres (evenly spaced), 22 tracks a genre (its smallest genre has
22), seeded: a proxy for the hidden corpus."""


def balanced_subsets(labels: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """(rows, seed) of N_SUBSETS class subsets, SUBSET_PER_CLASS seeded rows a class.

    The subsets cycle through the 5 seeds (rows drawn and clusterings seeded by it).
    """
    from itertools import combinations

    combos = list(combinations(sorted(set(labels)), SUBSET_CLASSES))
    out = []
    for i in range(min(N_SUBSETS, len(combos))):
        combo = combos[i * len(combos) // min(N_SUBSETS, len(combos))]
        seed = SEEDS[i % len(SEEDS)]
        rng = np.random.default_rng(seed)
        rows = [
            rng.choice(np.flatnonzero(labels == c), SUBSET_PER_CLASS, replace=False) for c in combo
        ]
        out.append((np.sort(np.concatenate(rows)), seed))
    return out


def subset_score(X: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """:func:`score` averaged over the balanced subsets (one seed each)."""
    runs = [score(X[rows], labels[rows], (seed,)) for rows, seed in balanced_subsets(labels)]
    out = {m: {v: float(np.mean([r[m][v] for r in runs])) for v in ("nmi", "ari")} for m in METHODS}
    out["p@10"] = float(np.mean([r["p@10"] for r in runs]))
    return out


def targets(corpus: Corpus) -> list[tuple[str, np.ndarray, bool]]:
    """(target name, labels, scored on balanced subsets?) of a corpus."""
    out = [
        (f"{corpus.name}/{k}", corpus.table[k].astype(str).to_numpy(), False)
        for k in corpus.label_kinds
    ]
    if corpus.name == "mer4q_genre":
        out.append(("mer4q_genre/genre4", out[0][1], True))
    return out


def evaluate(corpus: Corpus, sources: dict, names: list[str]) -> pd.DataFrame:
    """Long table: one row per (representation, clustering, target) of one corpus."""
    rows = []
    for name in names:
        X = representation(sources, name)
        for target, labels, subsets in targets(corpus):
            scores = subset_score(X, labels) if subsets else score(X, labels)
            for method in METHODS:
                rows.append(
                    {
                        "representation": name,
                        "clustering": method,
                        "target": target,
                        "nmi": scores[method]["nmi"],
                        "ari": scores[method]["ari"],
                        "p@10": scores["p@10"],
                        "s/track": representation_cost(sources, name),
                    }
                )
    return pd.DataFrame(rows)


def print_table(table: pd.DataFrame) -> None:
    """One row per representation × clustering; NMI / ARI per target, P@10 per target."""
    wide = table.pivot_table(
        index=["representation", "clustering"],
        columns="target",
        values=["nmi", "ari"],
        sort=False,
    )
    wide.columns = [f"{t} {m}" for m, t in wide.columns]
    order = list(dict.fromkeys(table["target"]))
    wide = wide[
        sorted(wide.columns, key=lambda c: (order.index(c.split()[0]), c.split()[1] != "nmi"))
    ]
    wide.columns = [
        c.replace("_genre/", "/").replace("gtzan_mini/", "gtzan/") for c in wide.columns
    ]
    p10 = table.pivot_table(index="representation", columns="target", values="p@10", sort=False)
    cost = table.groupby("representation", sort=False)["s/track"].first()
    with pd.option_context("display.width", 250, "display.max_rows", 500):
        print(wide.round(3).to_string())
        print("\nLeave-one-out kNN label precision@10 of each representation, and its cost")
        print(p10.assign(**{"s/track": cost}).round(3).to_string())


DEFAULT = "MSD_musicnn tag probs"
"""The representation ``soundclust run`` clusters with no options (config.AnalysisConfig.matrix:
``auto`` = the tags of the default musicnn backend), clustered by k-means."""
SINGLE_MODEL_EMBEDDINGS = [
    *(f"{m} emb {how}" for m in MUSICNN_MODELS for how in ("mean", "max", "meanstd")),
    *(f"{m} {layer}" for m in VGG_MODELS for layer in ("pool4", "pool5")),
]


def print_targets(table: pd.DataFrame) -> None:
    """Issue #14's targets per corpus target: the default's k-means NMI against the best
    single-model embedding and against the timbre features, from the table just printed."""
    km = table[table["clustering"] == "kmeans"].set_index(["target", "representation"])["nmi"]
    print(f"\nThe default ({DEFAULT}, k-means) against the issue's references, NMI:")
    for target in dict.fromkeys(table["target"]):
        row = km.loc[target]
        if DEFAULT not in row:
            continue
        singles = row[row.index.isin(SINGLE_MODEL_EMBEDDINGS)]
        best = singles.idxmax() if len(singles) else None
        line = f"  {target}: default {row[DEFAULT]:.3f}"
        if best is not None:
            line += f"; best single-model embedding {row[best]:.3f} ({best}): "
            line += f"{row[DEFAULT] - row[best]:+.3f}"
        if "timbre" in row:
            line += f"; timbre {row['timbre']:.3f}: {row[DEFAULT] / row['timbre']:.2f}x"
        print(line)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    p.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    p.add_argument("--recompute", action="store_true", help="refresh the cached sources")
    p.add_argument("--cache-only", action="store_true", help="fill the cache, print no table")
    p.add_argument("--representations", nargs="+", default=list(REPRESENTATIONS))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    tables = []
    for name in args.corpus:
        corpus = CORPORA[name]()
        sources = {s: load_source(corpus, s, args.recompute) for s in args.sources}
        if not args.cache_only:
            t0 = time.perf_counter()
            tables.append(evaluate(corpus, sources, args.representations))
            print(f"  scored {corpus.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    if tables:
        table = pd.concat(tables, ignore_index=True)
        print_table(table)
        print_targets(table)


if __name__ == "__main__":
    main()
