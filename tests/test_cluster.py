"""cluster.yaml, and docs/cluster.md's local two-node recipe, run as written.

The recipe's blocks (``<!-- local recipe: NAME -->`` before a bash block) are what this file
runs: ``start`` brings up a head and a worker (``ray start --block``, 1 CPU each, own folder,
ports and token), ``submit`` sends ``jobs/run.py`` with ``ray job submit``, ``stop`` stops the
two nodes. Each runs in ``bash -e`` after the ``settings`` block, in which this machine's free
ports, a temporary folder and this interpreter replace the doc's values; so the doc cannot
drift from what is tested. The job reads its INPUT from and writes OUT to a real S3-compatible
server (``s3_server.py``) whose endpoint and credentials reach the driver and every worker only
through the job's runtime env, as on a cloud cluster.

Nothing here touches the session's embedded Ray (``ray_local``) or any other Ray on the
machine: every shell we start lives in a process group of its own (the nodes it starts stay
in it), the doc's ``stop`` block stops exactly our nodes, and teardown fails if it left any
of them running (``ray stop`` would stop every Ray of the user).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
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
DOC = REPO / "docs" / "cluster.md"
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
RECIPE_BLOCK = re.compile(r"<!-- local recipe: (\w+) -->\n```bash\n(.*?)```", re.S)
LOCAL_SECTION = "## 7. A local two-node cluster"
NODE_PORT_OPTIONS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)
"""Ports each raylet opens: Ray's defaults (the dashboard agent's 52365 …) collide on one host."""


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


def test_docs_entrypoints_use_the_interpreter_cluster_yaml_installs_with():
    """setup_commands install with ``python3 -m pip``; every cloud ``ray job submit`` of
    docs/cluster.md and cluster.yaml starts its entrypoint with that interpreter, never a bare
    ``python`` that a node's PATH may resolve to another one."""
    installers = set()
    for command in load_cluster_yaml()["setup_commands"]:
        match = re.match(r"(\S+) -m pip install", command)
        assert match, f"install with '<interpreter> -m pip', not {command!r}"
        installers.add(match[1])
    assert installers == {"python3"}
    cloud = DOC.read_text().split(LOCAL_SECTION)[0] + CLUSTER_YAML.read_text()
    entrypoints = re.findall(r"(?:^|[\s`])([\w.$\"/-]+) jobs/\w+\.py", cloud, re.M)
    assert entrypoints and set(entrypoints) == installers, entrypoints


def recipe() -> dict[str, str]:
    """docs/cluster.md's local recipe: block name → bash text."""
    blocks = dict(RECIPE_BLOCK.findall(DOC.read_text()))
    assert {"settings", "start", "s3", "submit", "stop"} <= set(blocks), sorted(blocks)
    return blocks


def with_values(block: str, values: dict[str, str]) -> str:
    """``block`` with each ``NAME=value`` assignment of a name in ``values`` given that value
    in place (later lines that use $NAME, such as RAY_AUTH_TOKEN_PATH=$SC/…, follow it)."""
    for name, value in values.items():
        pattern = rf"(?<![\w$]){name}=(\"[^\"]*\"|'[^']*'|\S+)"
        block, n = re.subn(pattern, lambda _m, n=name, v=value: f"{n}={shlex.quote(v)}", block)
        assert n == 1, f"the doc's block assigns {name} {n} times, not once"
    return block


def test_recipe_settings_name_every_port_of_a_second_raylet():
    settings = recipe()["settings"]
    assert "export RAY_AUTH_MODE=token" in settings
    for node in ("HEAD_PORTS", "W1_PORTS"):
        value = re.search(rf'{node}="([^"]*)"', settings)[1].split()
        assert tuple(value[::2]) == NODE_PORT_OPTIONS, node
    assert not [name for name, block in recipe().items() if "ray stop" in block]


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all held open until every one is chosen)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def node_ports(ports: list[int]) -> str:
    return " ".join(f"{o} {p}" for o, p in zip(NODE_PORT_OPTIONS, ports, strict=True))


class LocalCluster:
    """docs/cluster.md's local two-node cluster, its blocks run with this machine's values.

    The shells get this process's environment without any RAY_* or AWS_* variable: what the
    nodes and the job need, the doc's blocks must give them.
    """

    def __init__(self, root: Path):
        self.root = root
        self.blocks = recipe()
        gcs, dash, client, *ports = free_ports(3 + 2 * len(NODE_PORT_OPTIONS))
        self.dashboard_port = dash
        self.values = {
            "SC": str(root),
            "PY": sys.executable,
            "RAY": RAY,
            "GCS": str(gcs),
            "DASH": str(dash),
            "CLIENT": str(client),
            "HEAD_PORTS": node_ports(ports[:6]),
            "W1_PORTS": node_ports(ports[6:]),
        }
        self.settings = with_values(self.blocks["settings"], self.values)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
        self.groups: list[int] = []
        """Process groups of the shells we ran (the nodes started by ``start`` stay in its)."""

    def run(self, name: str, timeout: float, s3_env: dict[str, str] | None = None):
        """Run the doc's block ``name`` in ``bash -e`` after the settings (and the s3 block
        with ``s3_env``'s values); returns the CompletedProcess (stdout and stderr together)."""
        prelude = [self.settings]
        if s3_env is not None:
            prelude.append(with_values(self.blocks["s3"], s3_env))
        script = "\n".join([*prelude, self.blocks[name]])
        proc = subprocess.Popen(
            ["bash", "-ec", script],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.groups.append(proc.pid)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            out += f"\n[{name} block timed out after {timeout} s]"
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")

    def tail(self, chars: int = 3000) -> str:
        logs = [self.root / f"{node}.log" for node in ("head", "w1")]
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in logs if p.exists()
        )

    def alive(self) -> list[int]:
        return [g for g in self.groups if _group_alive(g)]

    def kill_leftovers(self) -> None:
        """SIGTERM what is left of our process groups, SIGKILL it after a grace period."""
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            for pgid in self.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.alive():
                time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def two_node_cluster():
    """The doc's head + worker; a short temp root because Ray's Unix sockets allow 107 bytes."""
    root = Path(tempfile.mkdtemp(prefix="scray-"))
    cluster = LocalCluster(root)
    try:
        started = cluster.run("start", timeout=300)
        assert started.returncode == 0, f"{started.stdout}\n{cluster.tail()}"
        yield cluster
    finally:
        stopped = cluster.run("stop", timeout=120)
        deadline = time.monotonic() + 15  # the raylets' workers exit once their raylet is gone
        while cluster.alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        left = cluster.alive()
        cluster.kill_leftovers()
        shutil.rmtree(root, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stdout
    assert not left, "the doc's stop block left processes of the cluster running"


@pytest.fixture
def s3(tmp_path):
    pytest.importorskip("moto", reason="needs moto[server] (pip install -e '.[test]')")
    from s3_server import s3_server

    with s3_server(tmp_path / "moto.log") as server:
        yield server


@pytest.mark.slow
@pytest.mark.ray
def test_job_on_a_two_node_cluster_reads_and_writes_s3_from_both_nodes(
    two_node_cluster, s3, shared_data
):
    """The doc's ``submit`` block (jobs/run.py, INPUT and OUT on s3://): both nodes do tracks."""
    clips = sorted(GTZAN.glob("*.wav"))[:8]
    for clip in clips:
        s3.put(f"job/audio/{clip.name}", clip.read_bytes())
    rows = [f"audio/{c.name},{c.name.split('.')[0]}" for c in clips] + ["audio/gone.wav,none"]
    s3.put("job/labels.csv", ("path,genre\n" + "\n".join(rows) + "\n").encode())
    started = time.monotonic()
    # The block's env_vars carry RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S: Ray Data dispatches as
    # soon as one actor is up, and waiting for the whole pool (one actor per node here) keeps
    # a fast-starting node from taking every block of so small a corpus.
    proc = two_node_cluster.run("submit", timeout=300, s3_env=s3.env)
    seconds = time.monotonic() - started
    logs = f"{proc.stdout[-6000:]}\n{two_node_cluster.tail()}"
    assert proc.returncode == 0, logs
    assert "succeeded" in proc.stdout
    keys = s3.keys("runs/r1")
    assert {"run.json", "manifest.parquet", "errors.parquet"} <= set(keys)
    assert not [k for k in keys if ".tmp-" in k]
    with s3.fs.open_input_stream("corpus/runs/r1/run.json") as f:
        info = json.loads(f.read())
    product = info["products"]["features/timbre"]
    per_node = product["tracks_per_node"]
    assert len(per_node) == 2, per_node
    assert all(n >= 1 for n in per_node.values()) and sum(per_node.values()) == len(clips) + 1
    assert (product["written"], product["failed"]) == (len(clips), 1)
    shards = [
        pq.read_table(f"corpus/runs/r1/{k}", filesystem=s3.fs).to_pandas()
        for k in keys
        if k.startswith("features/timbre/part-")
    ]
    features = pd.concat(shards)
    assert sorted(features["track_id"]) == sorted(f"audio/{c.name}" for c in clips)
    assert np.isfinite(features.drop(columns="track_id").to_numpy()).all()
    errors = pq.read_table("corpus/runs/r1/errors.parquet", filesystem=s3.fs).to_pandas()
    assert errors["track_id"].tolist() == ["audio/gone.wav"]
    assert "not found" in errors["message"].iloc[0]
    print(f"two-node job on s3: {seconds:.1f} s, tracks per node {per_node}")
