"""What every job script shares: import this checkout's package and hand argv to the CLI.

``ray job submit --working-dir . -- python jobs/<name>.py …`` runs a script from the uploaded
working directory, where ``jobs/`` (not the repository root) is first on ``sys.path``; putting
the root in front makes the driver use the same code as the workers, which Ray gives the
working directory too. With ``RAY_ADDRESS`` set (``ray job submit`` sets it), the run joins
the cluster instead of starting a local Ray.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "soundclust_ray").is_dir() and str(ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(ROOT))


def run_cli(command: str, argv: Sequence[str], before: Sequence[str] = (),
            after: Sequence[str] = ()) -> int:
    """``soundclust <command> <before> <argv> <after>``: ``before`` are defaults the user's own
    options override, ``after`` are settings the job fixes (argparse keeps the last value)."""
    from soundclust_ray.cli import main

    return main([command, *before, *argv, *after])
