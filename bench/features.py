"""Feature families: seed-style per-track loop vs soundclust_ray's implementation.

Both run in this process, on the same real GTZAN clips, one CPU thread each (what one Ray
worker gets). The naive side is ``tests/oracles/features_reference.py``: each seed's code as
written, decoding the file with ``librosa.load`` for every feature group and calling each
librosa/essentia function from the waveform. The fast side decodes once per sample rate
(``load_audio``) and calls the registered families. Clips alternate naive/fast so both see
the same machine load.

    .venv/bin/python bench/features.py [--quick] [--clips N]

Prints tracks/s (wall and CPU time) per family and for all three together, and the ratio.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from soundclust_ray.audio import load_audio  # noqa: E402
from soundclust_ray.config import FeaturesConfig  # noqa: E402
from soundclust_ray.features.registry import (  # noqa: E402
    compute_family,
    decode_rates,
    get_families,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from oracles import features_reference as reference  # noqa: E402

DATA = (
    Path(
        os.environ.get(
            "SOUNDCLUST_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"
        )
    )
    / "gtzan_mini"
)
FAMILY_NAMES = ("timbre", "classic", "soundspace")
GOALS = {"timbre": 3.0, "classic": 3.0, "soundspace": 2.0, "all": 3.0}
CFG = FeaturesConfig(families=FAMILY_NAMES)


def naive(name: str, path: Path) -> dict[str, float]:
    """The seed's own code path for one family, from the file."""
    if name == "timbre":
        return reference.timbre_from_path(path)
    if name == "classic":
        return reference.classic_from_path(path)
    return reference.soundspace_from_path(path)


def naive_all(path: Path) -> dict[str, float]:
    """The three seeds one after the other, each decoding the file itself."""
    return {k: v for name in FAMILY_NAMES for k, v in naive(name, path).items()}


def fast(names: tuple[str, ...], path: Path) -> dict[str, float]:
    """What the feature stage does: one decode per distinct rate, then each family."""
    families = get_families(names)
    signals = {rate: load_audio(path, rate) for rate in decode_rates(families, CFG)}
    out: dict[str, float] = {}
    for family in families:
        out |= compute_family(family, signals, CFG)
    return out


def timed(fn, *args) -> tuple[float, float, dict[str, float]]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 clips instead of 4")
    parser.add_argument("--clips", type=int, default=None, help="number of clips to use")
    args = parser.parse_args()
    n_clips = args.clips or (2 if args.quick else 4)
    clips = sorted(p for p in DATA.glob("*.wav"))
    genres = {}
    for p in clips:  # one clip per genre first, so the sample is varied
        genres.setdefault(p.name.split(".")[0], p)
    paths = (list(genres.values()) + [p for p in clips if p not in genres.values()])[:n_clips]
    warnings.filterwarnings("ignore")

    # Warm-up (numba JIT, essentia set-up, filter caches) on a clip that is not timed.
    warm = next(p for p in clips if p not in paths)
    for name in FAMILY_NAMES:
        naive(name, warm)
        fast((name,), warm)

    cases = [(name, (name,)) for name in FAMILY_NAMES] + [("all", FAMILY_NAMES)]
    totals = {c: np.zeros(4) for c, _ in cases}  # naive wall, naive cpu, fast wall, fast cpu
    worst = defaultdict(float)
    for path in paths:
        for case, names in cases:
            n_wall, n_cpu, n_out = (
                timed(naive_all, path) if case == "all" else timed(naive, case, path)
            )
            f_wall, f_cpu, f_out = timed(fast, names, path)
            totals[case] += (n_wall, n_cpu, f_wall, f_cpu)
            for k, ref in n_out.items():
                rel = abs(f_out[k] - ref) / max(abs(ref), 1e-6)
                worst[case] = max(worst[case], rel)

    n = len(paths)
    print(f"features bench: {n} GTZAN clips x 30 s, 1 thread, same process, alternating")
    header = (
        f"{'family':<11}{'naive tr/s':>11}{'fast tr/s':>11}{'ratio':>8}"
        f"{'cpu ratio':>11}{'goal':>6}  max rel diff"
    )
    print(header)
    print("-" * len(header))
    for case, _ in cases:
        n_wall, n_cpu, f_wall, f_cpu = totals[case]
        ratio, cpu_ratio = n_wall / f_wall, n_cpu / f_cpu
        flag = "ok" if ratio >= GOALS[case] else "BELOW"
        print(
            f"{case:<11}{n / n_wall:>11.2f}{n / f_wall:>11.2f}{ratio:>7.1f}x{cpu_ratio:>10.1f}x"
            f"{GOALS[case]:>5.0f}x  {worst[case]:.1e} {flag}"
        )


if __name__ == "__main__":
    main()
