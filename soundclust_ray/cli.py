"""The ``soundclust`` command: run, demo, analyze, place, similar, export.

Parsing only: each command turns options into a RunConfig / AnalysisConfig and calls the
package. User errors (missing input, bad column, unknown family) end in one line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
import time
from pathlib import Path

from soundclust_ray import __version__, outdir
from soundclust_ray.config import (
    DEFAULT_EMBED_BACKENDS,
    EMBED_BACKEND_NAMES,
    HDBSCAN_MIN_CLUSTER_SIZE_PER_SQRT_ROW,
    MATRIX_NAMES,
    MSD_ANALYSIS_FIELDS,
    MUSICNN_MODEL_NAMES,
    AnalysisConfig,
    AudioConfig,
    ClapEmbedConfig,
    EmbedConfig,
    FeaturesConfig,
    MsdConfig,
    MusicnnConfig,
    RunConfig,
    SearchConfig,
    TabularConfig,
    check_tabular_role,
)
from soundclust_ray.embed.pooling import POOLS
from soundclust_ray.errors import EXIT_TOO_MANY_FAILURES, EXIT_USER_ERROR, UserError
from soundclust_ray.sources.base import RunOptions
from soundclust_ray.terminal import safe_json, safe_line


class _Parser(argparse.ArgumentParser):
    """Exact option names only (no abbreviations), and a mistake is one line with exit 2: the
    usage block only on ``--help``, a close option name suggested for an unknown one."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _option_names(self) -> list[str]:
        names = [o for a in self._actions for o in a.option_strings]
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    names += [o for a in sub._actions for o in a.option_strings]
        return sorted(set(names))

    def error(self, message: str):
        unknown = [w for w in message.split() if w.startswith("--")]
        if message.startswith("unrecognized arguments") and unknown:
            word = unknown[0].split("=")[0]
            close = difflib.get_close_matches(word, self._option_names(), n=1, cutoff=0.6)
            message = f"unknown option {word}" + (f"; did you mean {close[0]}?" if close else "")
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        """Also records ``options_given`` (the dests of the options typed, not defaulted), and
        requires OUT where ``add_out_argument`` made it positional-or-``--out``."""
        words = list(sys.argv[1:] if args is None else args)
        ns, rest = super().parse_known_args(words, namespace)
        typed = {
            a.dest
            for a in self._actions
            for o in a.option_strings
            if any(w == o or w.startswith(o + "=") for w in words)
        }
        ns.options_given = frozenset(getattr(ns, "options_given", frozenset()) | typed)
        if getattr(self, "_out_required", False) and getattr(ns, "out", None) is None:
            self.error("give the output folder OUT (as OUT or --out OUT)")
        return ns, rest


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs kept as written (examples), and each option's default in words: ``timbre`` or
    ``none``, never a Python tuple or None; a help that states its own default is left as is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.nargs == 0
            or action.required
            or isinstance(action, _OutAction)
            or action.default is argparse.SUPPRESS
            or "default:" in text
        ):
            return text
        return f"{text} (default: {_in_words(action.default)})".replace("%", "%%")


def _in_words(value: object) -> str:
    if value is None or value == () or value == "":
        return "none"
    if isinstance(value, tuple | list):
        return ",".join(_in_words(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _group(p: argparse.ArgumentParser, title: str):
    """The option group of ``p`` with this title, created (in call order) the first time."""
    for group in p._action_groups:
        if group.title == title:
            return group
    return p.add_argument_group(title)


INPUT, FEATURES, EMBEDDINGS, ANALYSIS, PERFORMANCE = (
    "input & output",
    "features",
    "embeddings",
    "analysis",
    "cluster & performance",
)
"""The option groups of ``run``/``demo``/``analyze``, in the order ``--help`` shows them."""


class _OutAction(argparse.Action):
    """OUT given positionally or as ``--out`` (both may be given when they agree)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if values is None:  # the optional positional, absent
            return
        current = getattr(namespace, self.dest, None)
        if current is not None and current != values:
            parser.error(f"OUT given twice: {current} and {values}")
        setattr(namespace, self.dest, values)


def add_out_argument(p: argparse.ArgumentParser, group=None) -> None:
    """OUT of a previous run, as ``soundclust CMD OUT`` or ``soundclust CMD --out OUT`` (the
    convention of ``run``); one of them is required."""
    g = group or p
    text = "output folder of a previous run (local path or s3://, gs://, file:// URI)"
    g.add_argument("out", nargs="?", action=_OutAction, metavar="OUT", help=text)
    g.add_argument("--out", dest="out", action=_OutAction, metavar="OUT", help="the same as OUT")
    p._out_required = True


def _csv_tuple(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip() and t.strip() != "none")


def _embed_backends(text: str) -> tuple[str, ...]:
    """``--embed`` names, each one a known backend (checked here, before Ray or torch start)."""
    import difflib

    names = _csv_tuple(text)
    for name in names:
        if name not in EMBED_BACKEND_NAMES:
            close = difflib.get_close_matches(name, EMBED_BACKEND_NAMES, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise argparse.ArgumentTypeError(
                f"unknown embedding backend {name!r} (known: {', '.join(EMBED_BACKEND_NAMES)}, "
                f"none){hint}"
            )
    return names


def _musicnn_model(text: str) -> str:
    """``--musicnn-model``: a bundled model name or a readable .safetensors file (the rule of
    embed/musicnn.py's ``weights_path``, checked here before Ray or torch start)."""
    if text in MUSICNN_MODEL_NAMES:
        return text
    path = Path(text).expanduser()
    if path.suffix != ".safetensors":
        close = difflib.get_close_matches(text, MUSICNN_MODEL_NAMES, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise argparse.ArgumentTypeError(
            f"unknown musicnn model {text!r}: use one of {', '.join(MUSICNN_MODEL_NAMES)} or a "
            f".safetensors file made by soundclust_ray.embed.convert_musicnn{hint}"
        )
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"musicnn weights file {text} not found")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"musicnn weights file {text} is not readable")
    return str(path)


def _clap_model(text: str) -> str:
    """``--clap-model``: a Hugging Face hub id (loaded from the cache or the network when the
    model starts), or a local directory, which must exist, be readable and hold a saved model
    (embed/clap.py reads a value as a path by the same rule)."""
    path = Path(text).expanduser()
    if not (text.startswith(("/", ".", "~")) or text.count("/") > 1 or path.exists()):
        return text
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"CLAP model directory {text} does not exist")
    if not os.access(path, os.R_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"CLAP model directory {text} is not readable")
    if not (path / "config.json").is_file():
        raise argparse.ArgumentTypeError(
            f"CLAP model directory {text} has no config.json: save one with "
            "ClapModel/ClapProcessor.save_pretrained(DIR) or `huggingface-cli download "
            "laion/larger_clap_music --local-dir DIR`"
        )
    return text


def _k_value(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        k = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("k must be an integer ≥ 2 or 'auto'") from exc
    if k < 2:
        raise argparse.ArgumentTypeError("k must be ≥ 2")
    return k


def _pca_value(text: str) -> float | int | None:
    if text in ("none", ""):
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--pca takes a number of components (e.g. 32), a variance fraction below 1 "
            f"(e.g. 0.95) or 'none', got '{text}'"
        ) from exc
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--pca must be above 0, got '{text}'")
    return int(value) if value >= 1 else value


def _weights_value(text: str) -> tuple[tuple[str, float], ...]:
    from soundclust_ray.analysis.scaling import parse_weights

    try:
        return parse_weights(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _column_role(text: str) -> tuple[str, str]:
    """``--column ROLE=NAME``: a known tabular role and a column name (the column is checked
    against the table's header before the run starts)."""
    role, sep, column = (t.strip() for t in text.partition("="))
    if not sep or not role or not column:
        raise argparse.ArgumentTypeError(
            f"expected ROLE=NAME, e.g. popularity=track_popularity, got {text!r}"
        )
    try:
        check_tabular_role(role, TabularConfig().roles)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return role, column


def _fraction(text: str) -> float:
    """A number in (0, 1]: seed 001's padding threshold and chunk quantile."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.5, got {text!r}") from exc
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction above 0 and at most 1, got {text!r}")
    return value


def _msd_k(text: str) -> int:
    """``--msd-k``: at least 2 clusters per field."""
    try:
        k = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--msd-k must be an integer >= 2, got {text!r}") from exc
    if k < 2:
        raise argparse.ArgumentTypeError(f"--msd-k must be >= 2, got {text!r}")
    return k


def _msd_fields(text: str) -> tuple[str, ...]:
    """``--msd-fields``: MSD analysis arrays, each a known one."""
    names = _csv_tuple(text)
    unknown = [n for n in names if n not in MSD_ANALYSIS_FIELDS]
    if unknown or not names:
        close = difflib.get_close_matches(unknown[0], MSD_ANALYSIS_FIELDS, n=1) if unknown else []
        hint = f"; did you mean {close[0]}?" if close else ""
        what = f"unknown MSD field {unknown[0]!r}" if unknown else "no MSD field given"
        raise argparse.ArgumentTypeError(f"{what} (known: {', '.join(MSD_ANALYSIS_FIELDS)}){hint}")
    return names


def _tabular_weights(text: str) -> tuple[tuple[str, float], ...]:
    """``--tabular-weights danceability=2,energy=1``: weights of known audio features."""
    features = TabularConfig().audio_features
    pairs = _weights_value(text)
    for name, _ in pairs:
        if name not in features:
            close = difflib.get_close_matches(name, features, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise argparse.ArgumentTypeError(
                f"unknown audio feature {name!r} (known: {', '.join(features)}){hint}"
            )
    return pairs


def tabular_config(args: argparse.Namespace) -> TabularConfig:
    """TabularConfig from ``--column`` and ``--tabular-weights`` (seed 003's where not given)."""
    d = TabularConfig()
    given = dict(args.tabular_weights or ())
    weights = tuple(given.get(c, w) for c, w in zip(d.audio_features, d.weights, strict=True))
    return dataclasses.replace(d, weights=weights, columns=tuple(args.column or ()))


def add_analysis_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``analyze``, in the parser's "analysis" group."""
    d = AnalysisConfig()
    g = _group(p, ANALYSIS)
    g.add_argument(
        "--k",
        type=_k_value,
        default=d.k,
        help="k-means clusters (at most the number of tracks), or 'auto' to pick k by "
        f"silhouette over {d.k_auto_range[0]}..{d.k_auto_range[1]}",
    )
    g.add_argument(
        "--label-col",
        default=None,
        help="manifest column with known labels: adds NMI/ARI/homogeneity/completeness",
    )
    g.add_argument(
        "--matrix",
        default=d.matrix,
        choices=list(MATRIX_NAMES),
        help="what to cluster; auto = the musicnn tag probabilities when present, else "
        "embeddings, else features (docs/quality.md)",
    )
    g.add_argument(
        "--pca",
        type=_pca_value,
        default=d.pca,
        help="PCA before clustering: N components or a variance fraction like 0.95",
    )
    g.add_argument(
        "--fit-sample",
        type=int,
        default=d.fit_sample,
        help="above this many rows HDBSCAN/UMAP are fitted on a seeded sample",
    )
    g.add_argument(
        "--weights",
        type=_weights_value,
        default=None,
        help="per-family weights after scaling, e.g. timbre=1,classic=0.5,embeddings=2 "
        "(default: 1 each)",
    )
    g.add_argument(
        "--backend",
        default=None,
        help="embedding backend(s) to cluster, e.g. musicnn, or msd_musicnn,mtt_musicnn for "
        "an ensemble (one block each, equal shares; default: every backend in OUT)",
    )
    g.add_argument(
        "--cluster-chunks",
        action="store_true",
        help="with --matrix features: cluster the classic 5 s chunks written by --chunk-level "
        "and give each track its chunks' majority label",
    )
    g.add_argument("--no-hdbscan", action="store_true", help="skip HDBSCAN")
    g.add_argument("--no-umap", action="store_true", help="skip the UMAP map (PCA map only)")
    g.add_argument(
        "--umap-neighbors", type=int, default=d.umap_n_neighbors, help="UMAP n_neighbors"
    )
    g.add_argument("--umap-min-dist", type=float, default=d.umap_min_dist, help="UMAP min_dist")
    add_duplicates_option(g)
    g.add_argument(
        "--min-cluster-size",
        type=int,
        default=d.hdbscan_min_cluster_size,
        help="HDBSCAN min_cluster_size, used as given (default: "
        f"{d.hdbscan_min_cluster_size}, or {HDBSCAN_MIN_CLUSTER_SIZE_PER_SQRT_ROW:g} x "
        "sqrt(tracks) when that is larger)",
    )
    g.add_argument(
        "--min-samples", type=int, default=d.hdbscan_min_samples, help="HDBSCAN min_samples"
    )


def analysis_config(args: argparse.Namespace) -> AnalysisConfig:
    """AnalysisConfig from parsed options (fields absent from the dataclass are ignored)."""
    names = {f.name for f in dataclasses.fields(AnalysisConfig)}
    values = {
        "k": args.k,
        "matrix": args.matrix,
        "pca": args.pca,
        "fit_sample": args.fit_sample,
        "hdbscan_min_cluster_size": args.min_cluster_size,
        "hdbscan_min_samples": args.min_samples,
    }
    extra = {
        "backend": getattr(args, "backend", None),
        "weights": getattr(args, "weights", None),
        "hdbscan": False if getattr(args, "no_hdbscan", False) else None,
        "umap": False if getattr(args, "no_umap", False) else None,
        "umap_n_neighbors": getattr(args, "umap_neighbors", None),
        "umap_min_dist": getattr(args, "umap_min_dist", None),
        "chunk_level": True if getattr(args, "cluster_chunks", False) else None,
        "duplicates": False if getattr(args, "duplicates", "on") == "off" else None,
        "hdbscan_scale_min_cluster_size": (
            False if "min_cluster_size" in getattr(args, "options_given", ()) else None
        ),
    }
    values.update({k: v for k, v in extra.items() if v is not None})
    return AnalysisConfig(**{k: v for k, v in values.items() if k in names})


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options of ``run`` (and ``demo``) that shape the pipeline, in option groups."""
    io, feat, emb, analysis, perf = (
        _group(p, t) for t in (INPUT, FEATURES, EMBEDDINGS, ANALYSIS, PERFORMANCE)
    )
    add_input_options(io)
    add_feature_options(feat)
    add_embedding_options(emb)
    analysis.add_argument(
        "--no-analysis", action="store_true", help="stop after writing the shards"
    )
    analysis.add_argument(
        "--keep-clusters",
        action="store_true",
        help="place the tracks new to OUT into its last clustering and maps (as `soundclust "
        "place`) instead of refitting; old tracks keep their clusters and positions",
    )
    add_performance_options(perf)


def add_input_options(g: argparse._ArgumentGroup) -> None:
    """``run``'s "input & output" group."""
    run = RunConfig()
    g.add_argument(
        "--limit",
        type=int,
        default=None,
        help="process only the first N manifest rows (default: all)",
    )
    g.add_argument(
        "--id-col",
        default=None,
        help="manifest column holding the track id, e.g. song_id (default: track_id, else the "
        "path as written)",
    )
    g.add_argument(
        "--path-col",
        default=None,
        help="manifest column holding the audio path, e.g. audio_path (default: path)",
    )
    g.add_argument(
        "--column",
        type=_column_role,
        action="append",
        default=None,
        metavar="ROLE=NAME",
        help="--source tabular: the table column that fills one of the vectors' roles, e.g. "
        "popularity=track_popularity, year=release_year (repeatable; roles: "
        f"{', '.join(TabularConfig().roles)}) (default: a column named as the role, else as "
        "in the public Spotify datasets)",
    )
    g.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="let manifest paths point outside the manifest's folder",
    )
    g.add_argument(
        "--overwrite", action="store_true", help="delete OUT's previous results instead of resuming"
    )
    g.add_argument(
        "--recompute",
        type=_csv_tuple,
        default=(),
        metavar="PRODUCT",
        help="compute these products of OUT again with this run's settings, e.g. timbre or "
        "embeddings/musicnn (comma-separated); every other product is kept as it is, and the "
        "old shards are replaced only once the new ones are written",
    )
    g.add_argument(
        "--max-error-rate",
        type=float,
        default=run.max_error_rate,
        help="exit with code 3 when more than this fraction of tracks failed",
    )
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="list what was found, what would be computed or resumed per product, and an "
        "estimate of time and disk from a few probed tracks; no Ray, OUT left as it is",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars or per-step messages")
    g.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's own logs and progress bars (by default they go to OUT/logs/)",
    )


def add_feature_options(g: argparse._ArgumentGroup) -> None:
    """``run``'s "features" group."""
    fd, audio, msd, tab = FeaturesConfig(), AudioConfig(), MsdConfig(), TabularConfig()
    g.add_argument(
        "--features",
        type=_csv_tuple,
        default=fd.families,
        help="comma-separated signal feature families (timbre, classic, soundspace) or 'none'",
    )
    g.add_argument(
        "--chunk-level",
        action="store_true",
        help="also write one row per classic 5 s chunk (chunk-level clustering)",
    )
    g.add_argument(
        "--max-duration",
        type=float,
        default=audio.max_duration_s,
        help="decode at most this many seconds per track (bounded memory)",
    )
    g.add_argument(
        "--padding-threshold",
        type=_fraction,
        default=fd.classic.padding_threshold,
        metavar="FRACTION",
        help="a last partial classic chunk (and CLAP window) is zero-padded and kept "
        "when at least this fraction of it is present",
    )
    g.add_argument(
        "--chunk-quantile",
        type=_fraction,
        default=fd.classic.chunk_quantile,
        metavar="FRACTION",
        help="classic chunks per track are capped at the chunk count of this "
        "quantile of the corpus's durations",
    )
    g.add_argument(
        "--msd-k",
        type=_msd_k,
        default=msd.oof_k,
        metavar="K",
        help="--source msd: clusters of each field's out-of-fold MiniBatchKMeans",
    )
    g.add_argument(
        "--msd-fields",
        type=_msd_fields,
        default=msd.fields,
        metavar="FIELDS",
        help=f"--source msd: comma-separated analysis arrays summarised, any of "
        f"{', '.join(MSD_ANALYSIS_FIELDS)} (default: {', '.join(msd.fields)})",
    )
    g.add_argument(
        "--tabular-weights",
        type=_tabular_weights,
        default=None,
        metavar="FEATURE=W,...",
        help="--source tabular: weights of the standardized audio features, e.g. "
        "danceability=2,energy=1; the others keep theirs (default: "
        + ", ".join(f"{c}={w:g}" for c, w in zip(tab.audio_features, tab.weights, strict=True))
        + ")",
    )


def add_embedding_options(g: argparse._ArgumentGroup) -> None:
    """``run``'s "embeddings" group."""
    clap, mn = ClapEmbedConfig(), MusicnnConfig()
    g.add_argument(
        "--embed",
        type=_embed_backends,
        default=DEFAULT_EMBED_BACKENDS,
        help="comma-separated embedding backends (clap, musicnn, msd_musicnn, mtt_musicnn, "
        "msd_vgg, mtt_vgg) or 'none'; musicnn clusters best (docs/quality.md)",
    )
    g.add_argument(
        "--clap-model",
        type=_clap_model,
        default=clap.model,
        help="CLAP Hugging Face hub id, or a local directory holding a saved model",
    )
    g.add_argument("--clap-window", type=float, default=clap.window_s, help="CLAP window, seconds")
    g.add_argument(
        "--max-windows",
        type=int,
        default=clap.max_windows,
        help="at most this many CLAP windows per track",
    )
    g.add_argument(
        "--clap-batch", type=int, default=clap.batch_size, help="CLAP windows per forward pass"
    )
    g.add_argument(
        "--clap-strategy",
        default=clap.strategy,
        choices=["chunk_average", "chunk_level"],
        help="mean of window embeddings per track, or one row per window + majority vote",
    )
    g.add_argument(
        "--musicnn-model",
        type=_musicnn_model,
        default=mn.model,
        help=f"weights of the 'musicnn' backend: {', '.join(MUSICNN_MODEL_NAMES)} or a "
        ".safetensors file (the msd_musicnn … mtt_vgg backends name their own)",
    )
    g.add_argument(
        "--musicnn-pool",
        default=mn.pool,
        choices=list(POOLS),
        help="how patch vectors become one track vector (mean_std: 2x the dims)",
    )
    g.add_argument(
        "--musicnn-layer",
        default=mn.layer,
        help="layer of the musicnn/vgg backends: penultimate, max_pool, mean_pool, logits "
        "(musicnn pair), pool1…pool5, logits (vgg pair) (default: penultimate / pool5)",
    )
    g.add_argument(
        "--musicnn-hop",
        type=int,
        default=mn.patch_hop,
        help=f"frames between patch starts (< {mn.patch_frames} overlaps patches)",
    )


def add_performance_options(g: argparse._ArgumentGroup) -> None:
    """``run``'s "cluster & performance" group."""
    run = RunConfig()
    g.add_argument(
        "--address",
        default=None,
        metavar="HOST:PORT",
        help="join this running Ray cluster (like RAY_ADDRESS; 'auto' finds one on this "
        "machine) (default: start a private embedded Ray)",
    )
    g.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="CPUs of the embedded local Ray; ignored with --address or RAY_ADDRESS (default: all)",
    )
    g.add_argument(
        "--batch-size", type=int, default=run.batch_size, help="tracks per Ray Data batch"
    )
    g.add_argument(
        "--shard-rows", type=int, default=run.shard_rows, help="tracks per Parquet shard"
    )


def run_config(args: argparse.Namespace) -> RunConfig:
    """RunConfig from parsed ``run`` options."""
    d = RunConfig()
    classic = dataclasses.replace(
        d.features.classic,
        padding_threshold=args.padding_threshold,
        chunk_quantile=args.chunk_quantile,
    )
    features = dataclasses.replace(
        d.features, families=args.features, chunk_level=args.chunk_level, classic=classic
    )
    embed = EmbedConfig(
        backends=args.embed,
        clap=dataclasses.replace(
            d.embed.clap,
            model=args.clap_model,
            window_s=args.clap_window,
            max_windows=args.max_windows,
            batch_size=args.clap_batch,
            strategy=args.clap_strategy,
            min_last_window=args.padding_threshold,
        ),
        musicnn=dataclasses.replace(
            d.embed.musicnn,
            model=args.musicnn_model,
            pool=args.musicnn_pool,
            layer=args.musicnn_layer,
            patch_hop=args.musicnn_hop,
        ),
    )
    return dataclasses.replace(
        d,
        features=features,
        embed=embed,
        audio=dataclasses.replace(d.audio, max_duration_s=args.max_duration),
        analysis=analysis_config(args),
        msd=dataclasses.replace(d.msd, oof_k=args.msd_k, fields=args.msd_fields),
        tabular=tabular_config(args),
        source=getattr(args, "source", "audio"),
        batch_size=args.batch_size,
        shard_rows=args.shard_rows,
        max_error_rate=args.max_error_rate,
    )


def say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(safe_line(text), flush=True)


def run_options(input_path: str, args: argparse.Namespace) -> RunOptions:
    """RunOptions from parsed ``run``/``demo`` options."""
    return RunOptions(
        input_path=input_path,
        out=args.out,
        overwrite=args.overwrite,
        allow_outside_root=args.allow_outside_root,
        limit=args.limit,
        label_col=args.label_col,
        id_col=getattr(args, "id_col", None),
        path_col=getattr(args, "path_col", None),
        no_analysis=args.no_analysis,
        keep_clusters=getattr(args, "keep_clusters", False),
        recompute=getattr(args, "recompute", ()),
        num_cpus=args.num_cpus,
        address=getattr(args, "address", None),
        quiet=args.quiet,
        verbose=args.verbose,
    )


def execute_run(source: str, input_path: str, args: argparse.Namespace) -> int:
    """The body of ``run`` and ``demo``: the orchestrator, then the summary and the verdict."""
    from soundclust_ray.run import execute

    opts = run_options(input_path, args)
    if getattr(args, "dry_run", False):
        from soundclust_ray.run import plan

        print_plan(plan(source, opts, run_config(args), lambda t: say(args, t)))
        return 0
    k_given = "k" in getattr(args, "options_given", ())
    outcome = execute(source, opts, run_config(args), lambda t: say(args, t), k_given=k_given)
    print_summary(args.out, outcome.info, outcome.metrics, outcome.seconds)
    if outcome.failure:
        errors = outdir.path(args.out, outdir.ERRORS)
        print(safe_line(f"error: {outcome.failure}; see {errors}"), file=sys.stderr)
        return EXIT_TOO_MANY_FAILURES
    return 0


def _size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n_bytes < 1000 or unit == "TB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return ""


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def print_plan(plan: dict) -> None:
    """``run --dry-run``: the plan of ``run.plan`` on one screen."""
    out = plan["out"]
    lines = ["", "── soundclust dry run (nothing computed, nothing written) " + "─" * 10]
    state = {
        "new": f"{out} does not exist: the run would create it",
        "empty": f"{out} is empty: the run would claim it",
        "soundclust": f"{out} holds an earlier run: "
        + ("--overwrite would delete its results" if plan["overwrite"] else "the run resumes it"),
    }[plan["out_state"]]
    lines.append(f"  out: {state}")
    invalid = plan["invalid"]
    lines.append(
        f"  input: {plan['rows']} rows in {plan['input']}: {plan['tracks']} tracks, "
        f"{invalid['count']} bad rows"
    )
    for reason, n in invalid["reasons"].items():
        lines.append(f"    {n} × {reason}")
    lines += [f"      e.g. {path}" for path, _ in invalid["examples"]]
    if plan["changed"] or plan["removed"]:
        lines.append(
            f"  {plan['changed']} changed files would be recomputed, {plan['removed']} tracks no "
            "longer in the input dropped from OUT"
        )
    for name in plan["broken_shards"]:
        lines.append(f"  {name}: unreadable, would be moved to quarantine/ and its tracks redone")
    for product, p in plan["products"].items():
        line = f"  {product:<22} would compute {p['todo']:>7}, resumed {p['resumed']:>7}"
        probe = p.get("probe") or {}
        if "seconds" in p:
            line += f"   ~{_duration(p['seconds'])}"
        if "bytes" in p:
            line += f", ~{_size(p['bytes'])}"
        lines.append(line)
        if "error" in probe:
            lines.append(f"    probe failed: {probe['error']}")
        elif probe:
            lines.append(
                f"    probe: {probe['tracks']} tracks, {probe['s_per_track']:.2f} s per track "
                f"(+{probe['setup_s']:.1f} s set-up)"
                + (
                    f", {_size(probe['bytes_per_track'])} per track"
                    if "bytes_per_track" in probe
                    else ""
                )
            )
            if probe["failed"]:
                lines.append(
                    f"    {probe['failed']} of {probe['tracks']} probed tracks failed: "
                    f"{probe['first_error']}"
                )
    lines.append(
        f"  estimate: ~{_duration(plan['seconds'])} of compute and ~{_size(plan['bytes'])} of "
        f"shards, assuming this machine's {plan['cpus']} CPUs (on a cluster, scale by its CPUs; "
        "Ray start-up and the analysis not included)"
    )
    print(safe_line("\n".join(lines)), flush=True)


def print_summary(out: str, info: dict, metrics: dict | None, seconds: float) -> None:
    """One screen: what was done, how well it clustered, where the outputs are."""
    lines = ["", "── soundclust summary " + "─" * 40]
    for product, p in info["products"].items():
        nodes = len(p["tracks_per_node"])
        where = f"  on {nodes} node(s)" if nodes else ""
        lines.append(
            f"  {product:<22} {p['written']:>6} written  {p['skipped']:>6} resumed  "
            f"{p['failed']:>4} failed  {p['seconds']:7.1f} s{where}"
        )
    lines.append(
        f"  {info['n_failed']} tracks failed"
        + (" (see errors.parquet)" if info["n_failed"] else "")
    )
    if metrics:

        def fmt(v):
            return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

        chosen = " (chosen by silhouette: --k auto)" if metrics.get("k_selection") else ""
        lines.append(
            f"  tracks clustered: {metrics.get('n_tracks')}   k = {metrics.get('k')}{chosen}   "
            f"silhouette = {fmt(metrics.get('silhouette'))}"
        )
        lines.append(
            f"  HDBSCAN clusters: {fmt(metrics.get('n_hdbscan_clusters'))}   "
            f"noise fraction = {fmt(metrics.get('noise_fraction'))}"
        )
        warning = (metrics.get("hdbscan") or {}).get("warning")
        if warning:
            lines.append(f"  warning: {warning}")
        if metrics.get("label_col"):
            lines.append(
                f"  vs labels '{metrics['label_col']}' (k-means): NMI = {fmt(metrics.get('nmi'))}"
                f"   ARI = {fmt(metrics.get('ari'))}"
            )
        if (metrics.get("placement") or {}).get("placed_tracks"):
            lines.append(
                f"  placed into that fit: {metrics['placement']['placed_tracks']} tracks "
                "(placed=True in clusters.parquet; the scores above are of the fit)"
            )
    lines.append(f"  total time {seconds:.1f} s")
    lines.append(f"  outputs in {out.rstrip('/')}/:")
    present = [name for name in outdir.SUMMARY_OUTPUTS if outdir.exists(out, name)]
    lines += [f"    {name}/" if name in outdir.FOLDERS else f"    {name}" for name in present]
    if outdir.REPORT in present:
        lines.append(f"  open {out.rstrip('/')}/{outdir.REPORT}")
    print(safe_line("\n".join(lines)), flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    return execute_run(args.source, args.input, args)


def cmd_demo(args: argparse.Namespace) -> int:
    from soundclust_ray.demo import make_demo_corpus

    corpus = Path(args.out) / "corpus"
    manifest = corpus / "labels.csv"
    if not manifest.exists():
        say(args, f"synthesizing the demo corpus in {corpus} …")
        manifest = make_demo_corpus(corpus)
    args.label_col = args.label_col or "style"
    return execute_run("audio", str(manifest), args)


ANALYSIS_OPTION_FIELDS = {
    "k": ("k",),
    "matrix": ("matrix",),
    "pca": ("pca",),
    "fit_sample": ("fit_sample",),
    "weights": ("weights",),
    "backend": ("backend",),
    "cluster_chunks": ("chunk_level",),
    "no_hdbscan": ("hdbscan",),
    "no_umap": ("umap",),
    "umap_neighbors": ("umap_n_neighbors",),
    "umap_min_dist": ("umap_min_dist",),
    "duplicates": ("duplicates",),
    "min_cluster_size": ("hdbscan_min_cluster_size", "hdbscan_scale_min_cluster_size"),
    "min_samples": ("hdbscan_min_samples",),
    "label_col": ("label_col",),
}
"""The AnalysisConfig fields (and label column) each analysis option sets: ``analyze`` takes
every field whose option was not typed from OUT's last analysis."""


def cmd_analyze(args: argparse.Namespace) -> int:
    from soundclust_ray.run import remembered_analysis, run_analysis
    from soundclust_ray.runinfo import read_run_info

    if not outdir.exists(args.out, outdir.MANIFEST):
        raise UserError(f"{args.out} has no {outdir.MANIFEST}: run `soundclust run` first")
    started = time.perf_counter()
    given = getattr(args, "options_given", frozenset())
    typed = {f for option in given for f in ANALYSIS_OPTION_FIELDS.get(option, ())}
    cfg, label_col, remembered = remembered_analysis(
        args.out, analysis_config(args), args.label_col, typed
    )
    if remembered:
        shown = ", ".join(f"{k} {v}" for k, v in remembered.items())
        say(args, f"as in the last analysis of {args.out}: {shown}")
    metrics = run_analysis(args.out, cfg, label_col, not args.quiet, k_given="k" in given)
    info = read_run_info(args.out) or {"products": {}, "n_failed": metrics.get("n_failed", 0)}
    print_summary(args.out, info, metrics, time.perf_counter() - started)
    return 0


def cmd_place(args: argparse.Namespace) -> int:
    """``soundclust place OUT``: the tracks new to OUT into its saved clustering."""
    from soundclust_ray import outguard
    from soundclust_ray.analysis.placing import place_new_tracks

    started = time.perf_counter()
    if not outdir.exists(args.out, outdir.METRICS):
        raise UserError(
            f"{args.out} has no finished analysis ({outdir.METRICS}): `soundclust run` first"
        )
    try:
        with outguard.hold_lock(args.out):
            metrics = place_new_tracks(args.out)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc).strip("'\"")) from exc
    p = metrics["placement"]
    if args.json:
        print(safe_json(json.dumps(p, indent=2)))
        return 0
    say(
        args,
        f"placed {p['last_placed']} new tracks into the clustering of {p['fitted_tracks']} "
        f"tracks in {time.perf_counter() - started:.1f} s ({p['placed_tracks']} placed in all, "
        f"placed=True in {outdir.path(args.out, outdir.CLUSTERS)}); scores and summaries stay "
        "those of the fit, `soundclust analyze` refits",
    )
    return 0


def add_place_command(sub) -> None:
    """``soundclust place OUT``."""
    place = sub.add_parser(
        "place",
        formatter_class=_HelpFormatter,
        help="add the tracks new to OUT to its clusters and maps without refitting",
        description="Assign the tracks that have shards in OUT but are not in its last "
        "analysis (added by a later run) to the saved k-means and HDBSCAN clusters and "
        "UMAP/PCA maps; the tracks already clustered keep their ids and positions.",
        epilog=EXAMPLES["place"],
    )
    add_out_argument(place)
    place.add_argument("--quiet", action="store_true", help="print nothing on success")
    place.add_argument("--json", action="store_true", help="print the placement record as JSON")
    place.set_defaults(func=cmd_place)


def add_duplicates_option(p: argparse.ArgumentParser) -> None:
    """``--duplicates on|off``: OUT/duplicates.parquet and its count in metrics.json."""
    p.add_argument(
        "--duplicates",
        choices=["on", "off"],
        default="on",
        help="find near-duplicate pairs (cosine >= "
        f"{AnalysisConfig.duplicate_threshold} in the search geometry)",
    )


def cmd_similar(args: argparse.Namespace) -> int:
    from soundclust_ray.analysis.search import format_similar, format_similar_json, similar_tracks

    try:
        check_one_query(args)
        if args.list_tags or args.tag:
            return print_tag_query(args)
        if args.audio or args.text is not None:
            return print_outside_query(args)
        table = similar_tracks(
            args.out,
            args.id,
            k=args.k,
            matrix=args.matrix,
            approximate={"auto": None, "exact": False, "approximate": True}[args.index],
            nprobe=args.nprobe,
        )
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc).strip("'\"")) from exc
    text = format_similar_json(table) if args.json else format_similar(table)
    print(safe_json(text) if args.json else safe_line(text))
    return 0


QUERY_OPTIONS = ("id", "tag", "list_tags", "audio", "text")
"""``similar``'s ways of asking, of which one is given."""


def check_one_query(args: argparse.Namespace) -> None:
    """One of --id, --tag, --list-tags, --audio, --text (one line otherwise)."""
    given = [
        f"--{n.replace('_', '-')}" for n in QUERY_OPTIONS if getattr(args, n) not in (None, False)
    ]
    if len(given) != 1:
        also = f" ({' and '.join(given)} given)" if given else ""
        raise UserError(f"give one of --id, --tag, --list-tags, --audio or --text{also}")


def print_outside_query(args: argparse.Namespace) -> int:
    """``similar --audio FILE…`` / ``--text WORDS``: neighbours of sound files or words from
    outside the corpus. The good files are answered and each bad one gets one line on stderr
    (the only output when no file is good); the exit code is then 2."""
    from soundclust_ray.analysis.search import format_similar, format_similar_json
    from soundclust_ray.query import format_queries_json, similar_to_files, similar_to_text

    if args.matrix != "auto":
        raise UserError(
            "--matrix is for --id: --audio searches the matrix the run clustered, --text the "
            "CLAP embeddings"
        )
    approximate = {"auto": None, "exact": False, "approximate": True}[args.index]
    search = dataclasses.replace(SearchConfig(), ivf_nprobe=args.nprobe)
    if args.text is not None:
        table = similar_to_text(args.out, args.text, args.k, approximate, search)
        text = format_similar_json(table) if args.json else format_similar(table)
        print(safe_json(text) if args.json else safe_line(text))
        return 0
    tables, failed = similar_to_files(args.out, args.audio, args.k, approximate, search)
    if tables and args.json:
        print(safe_json(format_queries_json(tables, failed)))
    elif tables:
        print(safe_line("\n\n".join(format_similar(t) for t in tables)))
    for path, why in failed.items():
        print(f"error: {safe_line(f'{path}: {why}')}", file=sys.stderr)
    return EXIT_USER_ERROR if failed else 0


def print_tag_query(args: argparse.Namespace) -> int:
    """``similar --list-tags`` / ``--tag TAG``: the run's tagger vocabulary or a ranking."""
    from soundclust_ray.analysis.search import (
        format_similar,
        format_similar_json,
        run_tags,
        tracks_by_tag,
    )

    if args.list_tags:
        backend, _, tags = run_tags(args.out)
        names = list(tags.columns)
        text = json.dumps({"backend": backend, "tags": names}) if args.json else " ".join(names)
        print(safe_json(text) if args.json else safe_line(text))
        return 0
    table = tracks_by_tag(args.out, args.tag, k=args.k)
    text = format_similar_json(table) if args.json else format_similar(table)
    print(safe_json(text) if args.json else safe_line(text))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from soundclust_ray.export import export

    for path in export(args.out, args.format, args.to):
        print(safe_line(str(path)))
    return 0


def add_export_command(sub) -> None:
    """``soundclust export OUT --format npz|npy|csv|m3u|parquet [--to DIR]``."""
    from soundclust_ray.export import FORMATS

    export = sub.add_parser(
        "export",
        formatter_class=_HelpFormatter,
        help="write OUT's results in the seeds' file formats",
        description="Write embeddings, vectors, cluster labels, a joined CSV/Parquet table or "
        "one M3U playlist per cluster, named as the seed notebooks named them.",
        epilog=EXAMPLES["export"],
    )
    add_out_argument(export)
    export.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    export.add_argument("--to", default=None, help="destination folder (default: OUT/export)")
    export.set_defaults(func=cmd_export)


EXAMPLES = {
    "soundclust": """examples:
  soundclust demo                              # 40 synthesized tracks, end to end
  soundclust run ~/Music --out out/            # a folder of audio files
  soundclust analyze out/ --k auto             # cluster again with other options
  soundclust similar out/ --id TRACK_ID        # nearest tracks
  soundclust COMMAND --help                    # every option of a command""",
    "run": """examples:
  soundclust run ~/Music --out out/
  soundclust run labels.csv --out out/ --label-col genre --k auto
  soundclust run corpus/ --out out/ --embed clap,musicnn --features timbre,classic
  soundclust run s3://bucket/audio/ --out s3://bucket/out/ --address auto
  soundclust run msd_h5/ --out out/ --source msd
  soundclust run features.csv --out out/ --source tabular --k 12""",
    "demo": """examples:
  soundclust demo
  soundclust demo --out /tmp/demo --embed none --k 4""",
    "analyze": """examples:
  soundclust analyze out/ --k auto
  soundclust analyze --out out/ --matrix features --pca 0.95 --label-col genre
  soundclust analyze out/ --matrix both --weights timbre=1,embeddings=2""",
    "place": """examples:
  soundclust run ~/Music --out out/                 # fit once
  soundclust run ~/Music --out out/ --no-analysis   # later: shards of the new files only
  soundclust place out/                             # new tracks into the saved clusters
  soundclust run ~/Music --out out/ --keep-clusters # the same in one command""",
    "similar": """examples:
  soundclust similar out/ --id TRACK_ID
  soundclust similar out/ --id TRACK_ID --k 20 --json
  soundclust similar --out out/ --list-tags
  soundclust similar out/ --tag rock
  soundclust similar out/ --audio new.mp3 other.flac
  soundclust similar out/ --text 'calm solo piano'""",
    "export": """examples:
  soundclust export out/ --format m3u
  soundclust export --out out/ --format csv --to exported/""",
}
"""The epilog of each command's ``--help``."""


def build_parser() -> argparse.ArgumentParser:
    fmt = _HelpFormatter
    parser = _Parser(
        prog="soundclust",
        formatter_class=fmt,
        description="Music corpus → audio features, embeddings and clusters, on Ray Data.",
        epilog=EXAMPLES["soundclust"],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        formatter_class=fmt,
        help="extract, embed and cluster a corpus",
        description="Extract features/embeddings of INPUT into OUT, then cluster.",
        epilog=EXAMPLES["run"],
    )
    io = _group(run, INPUT)
    io.add_argument(
        "input",
        help="audio folder (recursive), manifest (CSV/Parquet/JSONL with 'path'), "
        "MSD HDF5 folder or manifest (--source msd), or feature table "
        "(--source tabular)",
    )
    io.add_argument(
        "--out", required=True, help="output folder (local path or s3://, gs://, file:// URI)"
    )
    io.add_argument(
        "--source", default="audio", choices=["audio", "msd", "tabular"], help="what INPUT holds"
    )
    add_run_options(run)
    add_analysis_options(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser(
        "demo",
        formatter_class=fmt,
        help="synthesize a labelled corpus and run on it",
        description="Synthesize 40 tracks in 4 styles and run the whole job on them: "
        "timbre features and pretrained musicnn embeddings + tags.",
        epilog=EXAMPLES["demo"],
    )
    _group(demo, INPUT).add_argument(
        "--out", default="demo_out", help="output folder (the corpus goes to OUT/corpus)"
    )
    add_run_options(demo)
    add_analysis_options(demo)
    demo.set_defaults(func=cmd_demo, k=4, embed=("musicnn",))

    analyze = sub.add_parser(
        "analyze",
        formatter_class=fmt,
        help="(re)cluster an existing OUT",
        description="Gather OUT's shards and run the driver analysis again.",
        epilog=EXAMPLES["analyze"],
    )
    io = _group(analyze, INPUT)
    add_out_argument(analyze, io)
    io.add_argument("--quiet", action="store_true", help="no progress bars")
    add_analysis_options(analyze)
    analyze.set_defaults(func=cmd_analyze)

    similar = sub.add_parser(
        "similar",
        formatter_class=fmt,
        help="nearest tracks to a track, a sound file, a tag or words",
        description="Print the nearest tracks by cosine similarity (to a corpus track, to "
        "sound files, to words with CLAP) or the tracks most likely to carry a tag.",
        epilog=EXAMPLES["similar"],
    )
    add_out_argument(similar)
    similar.add_argument("--id", default=None, help="track_id to query")
    similar.add_argument(
        "--tag", default=None, help="rank tracks by this tag's probability (run's tagger)"
    )
    similar.add_argument(
        "--list-tags", action="store_true", help="print the tags --tag accepts and exit"
    )
    similar.add_argument(
        "--audio",
        nargs="+",
        metavar="FILE",
        default=None,
        help="sound files to query with (need not be in the corpus): decoded and embedded "
        "with the run's own configuration, searched in the clustered matrix",
    )
    similar.add_argument(
        "--text",
        default=None,
        metavar="WORDS",
        help="words to query with, ranked against the CLAP embeddings by cosine (CLAP's text "
        "tower; needs a run with --embed clap)",
    )
    similar.add_argument("--k", type=int, default=10, help="number of neighbours")
    similar.add_argument(
        "--matrix",
        default="auto",
        help="vectors to search with --id: auto (the clustered matrix), features, embeddings, "
        "embeddings:<backend>, tags, tags:<backend>, tabular",
    )
    similar.add_argument(
        "--index",
        choices=["auto", "exact", "approximate"],
        default="auto",
        help="FAISS index kept in OUT/index/: exact (IndexFlatIP), approximate (IVF), or auto "
        f"(exact up to {SearchConfig.exact_max_rows:,} tracks)",
    )
    similar.add_argument(
        "--nprobe",
        type=int,
        default=SearchConfig.ivf_nprobe,
        help="IVF cells a query visits (approximate index)",
    )
    similar.add_argument("--json", action="store_true", help="print strict JSON")
    similar.set_defaults(func=cmd_similar)
    add_export_command(sub)
    add_place_command(sub)
    return parser


def no_space_left(exc: BaseException) -> bool:
    """True when ``exc`` comes from a full disk or quota (ENOSPC, EDQUOT), however deep Ray
    wrapped it: a shard writer's OSError reaches the driver as a Ray task error, its cause
    chained or only quoted in the message."""
    import errno

    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return "[Errno 28]" in str(exc) or "No space left on device" in str(exc)


def print_crash(exc: BaseException) -> None:
    """A bug's traceback, whole, on stderr, with URI credentials redacted (a traceback quotes
    the arguments, and an s3:// OUT may carry a secret) and control characters stripped."""
    import traceback

    text = "".join(traceback.format_exception(exc))
    print(safe_line(text), file=sys.stderr, end="")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {safe_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        if not no_space_left(exc):
            print_crash(exc)
            return 1
        out = getattr(args, "out", None)
        print(
            safe_line(
                f"error: no space left on the device{f' holding {out}' if out else ''}; "
                "free some space and rerun the same command to resume"
            ),
            file=sys.stderr,
        )
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
