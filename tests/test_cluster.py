"""cluster.yaml, and the job submitted with ``ray job submit`` to a real two-node Ray cluster.

The job reads its INPUT from and writes OUT to a real S3-compatible server (``s3_server.py``)
whose endpoint and credentials reach the driver and every worker through the job's runtime env,
as they would on a cloud cluster.

The cluster is two ``ray start`` processes on this machine (a head and a worker, 1 CPU each,
own temp dirs and ports), so nothing here touches the session's embedded Ray (``ray_local``)
or any other Ray on the machine: every process we start lives in a process group of its own,
and teardown signals exactly those groups (``ray stop`` would stop every Ray of the user).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import GTZAN, REPO

CLUSTER_YAML = REPO / "cluster.yaml"
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
READY_MARK = "block forever"


def load_cluster_yaml() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_the_ray_launcher_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(load_cluster_yaml()))
    broken = load_cluster_yaml()
    broken["available_node_types"]["cpu_worker"]["resource"] = {"CPU": 16}
    with pytest.raises(Exception, match="resource"):
        validate_config(prepare_config(broken))


def test_cluster_yaml_has_a_head_a_cpu_worker_and_a_gpu_worker():
    cfg = load_cluster_yaml()
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    head = types.pop(cfg["head_node_type"])
    assert head["resources"] == {"CPU": 0}, "Ray work stays off the driver's node"
    cpu, gpu = types["cpu_worker"], types["gpu_worker"]
    assert set(types) == {"cpu_worker", "gpu_worker"}
    assert cpu["resources"]["CPU"] >= 8 and not cpu["resources"].get("GPU")
    assert gpu["resources"]["GPU"] >= 1
    assert gpu["node_config"]["InstanceType"].startswith(("g4dn.", "g5.", "g6.", "p4d.", "p5."))
    for worker in (cpu, gpu):
        assert 0 <= worker["min_workers"] <= worker["max_workers"]
    assert gpu["min_workers"] >= 1, "embedding pools are sized from the GPUs present at start"
    assert cfg["max_workers"] >= cpu["max_workers"] + gpu["max_workers"]


def test_cluster_yaml_setup_installs_this_checkout():
    cfg = load_cluster_yaml()
    mounts = cfg["file_mounts"]
    remote = next(r for r, local in mounts.items() if local in (".", "./"))
    assert f"pip install -e {remote}" in " ".join(cfg["setup_commands"])
    assert (REPO / "pyproject.toml").exists()
    start = " ".join(cfg["head_start_ray_commands"])
    assert "ray start --head" in start and "--dashboard-host=127.0.0.1" in start
    for commands in (cfg["head_start_ray_commands"], cfg["worker_start_ray_commands"]):
        assert "RAY_AUTH_MODE=token" in commands[-1]
    assert any(remote.endswith(".ray/auth_token") for remote in mounts)


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all held open until every one is chosen)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


class LocalCluster:
    """A head and worker nodes from ``ray start --block`` on this machine, torn down by group.

    The cluster has its own token (token authentication on, as Ray's default), shared by its
    nodes and the ``ray job submit`` client through ``RAY_AUTH_TOKEN_PATH``.
    """

    def __init__(self, root: Path, num_cpus: int = 1):
        self.root = root
        self.num_cpus = num_cpus
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.gcs_port, self.dashboard_port, self.client_port = free_ports(3)
        token = root / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env = {**env, "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _node_args(self, name: str) -> list[str]:
        ports = free_ports(6)
        names = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                 "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"]
        args = [a for pair in zip(names, map(str, ports), strict=True) for a in pair]
        return [*args, "--num-cpus", str(self.num_cpus), "--num-gpus", "0",
                "--temp-dir", str(self.root / name), "--disable-usage-stats", "--block"]

    def _start(self, name: str, args: list[str], timeout: float) -> None:
        log = self.root / f"{name}.log"
        self.logs.append(log)
        with open(log, "wb") as f:
            self.procs.append(subprocess.Popen([RAY, "start", *args, *self._node_args(name)],
                                               stdout=f, stderr=subprocess.STDOUT, env=self.env,
                                               start_new_session=True))
        deadline = time.monotonic() + timeout
        while READY_MARK not in log.read_text(errors="replace"):
            if self.procs[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {name} did not start:\n{self.tail()}")
            time.sleep(0.5)

    def start_head(self, timeout: float = 120) -> None:
        self._start("head", ["--head", "--port", str(self.gcs_port),
                             "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
                             "--dashboard-port", str(self.dashboard_port),
                             "--ray-client-server-port", str(self.client_port)], timeout)

    def add_worker(self, name: str, timeout: float = 120) -> None:
        self._start(name, ["--address", f"127.0.0.1:{self.gcs_port}"], timeout)

    def submit(self, entrypoint: list[str], timeout: float,
               env_vars: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """``ray job submit --working-dir <repo>`` to the head's job server; waits for the end."""
        runtime_env = ["--runtime-env-json", json.dumps({"env_vars": env_vars})] if env_vars else []
        cmd = [RAY, "job", "submit", "--address", self.dashboard, "--working-dir", str(REPO),
               *runtime_env, "--", *entrypoint]
        return subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
                         for p in self.logs if p.exists())

    def stop(self) -> None:
        """SIGTERM each node's process group, SIGKILL what is left after a grace period."""
        for sig, grace in ((signal.SIGTERM, 4.0), (signal.SIGKILL, 5.0)):
            for proc in self.procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(_group_alive(p.pid) for p in self.procs):
                time.sleep(0.2)
        for proc in self.procs:
            proc.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def two_node_cluster():
    """Head + one worker; a short temp root because Ray's Unix sockets allow 107-byte paths."""
    root = Path(tempfile.mkdtemp(prefix="scray-"))
    cluster = LocalCluster(root)
    try:
        cluster.start_head()
        cluster.add_worker("w1")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def s3(tmp_path):
    pytest.importorskip("moto", reason="needs moto[server] (pip install -e '.[test]')")
    from s3_server import s3_server

    with s3_server(tmp_path / "moto.log") as server:
        yield server


@pytest.mark.slow
@pytest.mark.ray
def test_job_on_a_two_node_cluster_reads_and_writes_s3_from_both_nodes(two_node_cluster, s3,
                                                                         shared_data):
    """``ray job submit`` of jobs/run.py with INPUT and OUT on s3://: both nodes do tracks."""
    clips = sorted(GTZAN.glob("*.wav"))[:8]
    for clip in clips:
        s3.put(f"job/audio/{clip.name}", clip.read_bytes())
    rows = [f"audio/{c.name},{c.name.split('.')[0]}" for c in clips] + ["audio/gone.wav,none"]
    s3.put("job/labels.csv", ("path,genre\n" + "\n".join(rows) + "\n").encode())
    started = time.monotonic()
    # Ray Data dispatches as soon as one actor is up; waiting for the whole pool (one actor per
    # node here) keeps a fast-starting node from taking every block of so small a corpus.
    proc = two_node_cluster.submit(
        ["python", "jobs/run.py", "s3://corpus/job/labels.csv", "--out", "s3://corpus/runs/r1",
         "--no-analysis", "--max-duration", "3", "--batch-size", "1", "--cluster-cpus", "2",
         "--quiet"],
        timeout=240, env_vars={**s3.env, "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "120"})
    seconds = time.monotonic() - started
    logs = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{two_node_cluster.tail()}"
    assert proc.returncode == 0, logs
    assert "succeeded" in proc.stdout
    keys = s3.keys("runs/r1")
    assert {"run.json", "manifest.parquet", "errors.parquet"} <= set(keys)
    assert not [k for k in keys if ".tmp-" in k]
    with s3.fs.open_input_stream("corpus/runs/r1/run.json") as f:
        info = json.loads(f.read())
    product = info["products"]["features"]
    per_node = product["tracks_per_node"]
    assert len(per_node) == 2, per_node
    assert all(n >= 1 for n in per_node.values()) and sum(per_node.values()) == len(clips) + 1
    assert (product["written"], product["failed"]) == (len(clips), 1)
    shards = [pq.read_table(f"corpus/runs/r1/{k}", filesystem=s3.fs).to_pandas()
              for k in keys if k.startswith("features/part-")]
    features = pd.concat(shards)
    assert sorted(features["track_id"]) == sorted(f"audio/{c.name}" for c in clips)
    assert np.isfinite(features.drop(columns="track_id").to_numpy()).all()
    errors = pq.read_table("corpus/runs/r1/errors.parquet", filesystem=s3.fs).to_pandas()
    assert errors["track_id"].tolist() == ["audio/gone.wav"]
    assert "not found" in errors["message"].iloc[0]
    print(f"two-node job on s3: {seconds:.1f} s, tracks per node {per_node}")
