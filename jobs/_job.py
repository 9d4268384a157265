"""What every job script shares: import this checkout's package, size the cluster, call the CLI.

``ray job submit --working-dir . -- python3 jobs/<name>.py …`` runs a script from the uploaded
working directory, where ``jobs/`` (not the repository root) is first on ``sys.path``; putting
the root in front makes the driver use the same code as the workers, which Ray gives the
working directory too. With ``RAY_ADDRESS`` set (``ray job submit`` sets it), the run joins
the cluster instead of starting a local Ray.

The pipeline sizes its actor pools from the CPUs and GPUs the cluster has when a product
starts, so on an autoscaling cluster ``--cluster-cpus N`` / ``--cluster-gpus N`` first ask the
autoscaler for that much and wait for it (up to ``--cluster-wait`` seconds).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "soundclust_ray").is_dir() and str(ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(ROOT))

SCALE_POLL_S = 5.0
"""How often the wait for requested nodes looks at the cluster's resources."""


def scale_options() -> argparse.ArgumentParser:
    """Options every job takes besides the CLI's own."""
    p = argparse.ArgumentParser(add_help=False, usage=argparse.SUPPRESS,
                                description="cluster options of jobs/ (soundclust's own follow)")
    p.add_argument("--cluster-cpus", type=int, default=0,
                   help="request this many CPUs from the autoscaler and wait for them")
    p.add_argument("--cluster-gpus", type=int, default=0,
                   help="request this many GPUs from the autoscaler and wait for them")
    p.add_argument("--cluster-wait", type=float, default=900.0,
                   help="seconds to wait for the requested resources before starting anyway")
    return p


def wait_for_resources(cpus: int, gpus: int, timeout_s: float, quiet: bool) -> dict[str, float]:
    """Ask the autoscaler for ``cpus`` 1-CPU and ``gpus`` 1-GPU bundles; wait until present."""
    import ray
    from ray.autoscaler.sdk import request_resources

    from soundclust_ray.ray_env import init_ray

    init_ray(verbose=not quiet)
    request_resources(bundles=[{"CPU": 1}] * cpus + [{"GPU": 1}] * gpus)
    deadline = time.monotonic() + timeout_s
    while True:
        have = ray.cluster_resources()
        if have.get("CPU", 0) >= cpus and have.get("GPU", 0) >= gpus:
            return have
        if time.monotonic() > deadline:
            print(f"warning: cluster has {have.get('CPU', 0):g} CPUs / {have.get('GPU', 0):g} "
                  f"GPUs after {timeout_s:g} s (asked for {cpus} / {gpus}); starting anyway",
                  file=sys.stderr)
            return have
        time.sleep(SCALE_POLL_S)


def compose(command: str, argv: Sequence[str], before: Sequence[str] = (),
            after: Sequence[str] = ()) -> list[str]:
    """The ``soundclust`` argv of a job: its defaults, the user's options, its fixed settings."""
    return [command, *before, *argv, *after]


def run_cli(command: str, argv: Sequence[str], before: Sequence[str] = (),
            after: Sequence[str] = ()) -> int:
    """``soundclust <command> <before> <argv> <after>`` after any requested scale-up.

    ``before`` are defaults the user's options override, ``after`` settings the job fixes
    (argparse keeps an option's last value).
    """
    from soundclust_ray.cli import main

    scale, rest = scale_options().parse_known_args(list(argv))
    cli_argv = compose(command, rest, before, after)
    if "-h" in rest or "--help" in rest:
        print(scale_options().format_help(), flush=True)
    if scale.cluster_cpus or scale.cluster_gpus:
        have = wait_for_resources(scale.cluster_cpus, scale.cluster_gpus, scale.cluster_wait,
                                  quiet="--quiet" in rest)
        if "--quiet" not in rest:
            print(f"cluster: {have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs", flush=True)
    try:
        return main(cli_argv)
    finally:
        if scale.cluster_cpus or scale.cluster_gpus:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[])
