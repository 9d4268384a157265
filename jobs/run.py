"""The whole job on a cluster: manifest → features/embeddings → shards → analysis.

    ray job submit --working-dir . -- python3 jobs/run.py INPUT --out OUT [soundclust run options]

Takes exactly the options of ``soundclust run`` (``--help`` lists them).
"""

import sys

from _job import run_cli

if __name__ == "__main__":
    sys.exit(run_cli("run", sys.argv[1:]))
