"""Signal features only, on the cluster's CPU actors; no embeddings, no analysis.

    ray job submit --working-dir . -- python3 jobs/extract_features.py INPUT --out OUT \
        [--features timbre,classic,soundspace] [other soundclust run options]

Same options as ``soundclust run``; ``--embed`` and the analysis are switched off. Rerunning
resumes: tracks already in a family's OUT/features/<family> are skipped, and a family new to
OUT is computed alone.
"""

import sys

from _job import run_cli

if __name__ == "__main__":
    sys.exit(run_cli("run", sys.argv[1:], after=["--embed", "none", "--no-analysis"]))
