"""Embeddings only, on the cluster's GPU actors (CLAP, musicnn); no signal features, no analysis.

    ray job submit --working-dir . -- python3 jobs/embed.py INPUT --out OUT --embed clap \
        [other soundclust run options]

Same options as ``soundclust run``; ``--features`` and the analysis are switched off, and
``--embed`` is required. Writes OUT/embeddings/<backend>/ beside earlier features in OUT.
"""

import sys

from _job import run_cli

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--embed" or a.startswith("--embed=") for a in argv) and "-h" not in argv \
            and "--help" not in argv:
        print("error: jobs/embed.py needs --embed clap|musicnn[,...]", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_cli("run", argv, after=["--features", "none", "--no-analysis"]))
