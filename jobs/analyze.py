"""The driver analysis of an existing OUT: gather shards, scale, cluster, project, report.

    ray job submit --working-dir . -- python3 jobs/analyze.py OUT [soundclust analyze options]

Same options as ``soundclust analyze``. Runs on the head node in the job's driver process;
its memory is bounded by the gathered matrix, so give the head node enough RAM for it.
"""

import sys

from _job import run_cli

if __name__ == "__main__":
    sys.exit(run_cli("analyze", sys.argv[1:]))
