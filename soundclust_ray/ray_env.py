"""Ray start-up and the facts of the cluster a run sees (CPUs, node names).

The only module that starts or joins Ray. An embedded local Ray gets a bounded object store; a
``RAY_ADDRESS`` joins an existing cluster (``ray job submit`` sets it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator

LOCAL_IP = "127.0.0.1"
"""An embedded Ray is the run's own: ``address="local"`` never joins a ``ray start`` cluster
found on the machine (which refused our object-store size), and every port binds to loopback."""

SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch between a single-machine and a cluster-capable node (``ray_constants.
ENABLE_RAY_CLUSTER``). ``_node_ip_address="127.0.0.1"`` alone is not enough on Linux (Ray 2.60):
``ray.init`` passes it through ``services.resolve_ip_for_localhost``, which replaces any
loopback address by the machine's routable IP *unless* ENABLE_RAY_CLUSTER is false; the GCS,
raylet, object manager and worker gRPC servers then bind that IP or ``*`` (measured with
``ss -ltnp``: gcs_server, raylet, every worker and the dashboard agent on ``*``, the runtime-env
agent on the host IP, the agent's metrics export on 0.0.0.0). With the switch off the node IP
stays 127.0.0.1 and every server binds loopback: since ray-project/ray#59852 the C++ servers
bind the node IP, and the Python agents and Prometheus endpoints (runtime-env agent, dashboard
agent gRPC/HTTP, metrics export, dashboard and autoscaler metrics) bind localhost when the node
IP is loopback. tests/test_exposure.py checks every LISTEN socket of the embedded Ray."""
LOCAL_OBJECT_STORE_FRACTION = 0.2
LOCAL_OBJECT_STORE_MAX_BYTES = 4 * 1024**3


RAY_DRIVER_LOG = "ray-driver.log"
"""File under OUT/logs/ that receives everything Ray writes to the driver's stderr."""


@contextlib.contextmanager
def ray_output_to(log_dir: str | None) -> Iterator[None]:
    """Send the driver's stderr (fd 2) to ``log_dir``/ray-driver.log while the block runs.

    Ray writes to fd 2 from C++ (``core_worker.cc`` lines), from its Python loggers (token-auth
    warning, Ray Data's execution plan) and from warnings; none of it is for the user. Redirecting
    the file descriptor catches all three; soundclust's own lines go to stdout and are untouched.
    ``None`` (``--verbose``) leaves stderr alone.
    """
    if log_dir is None:
        yield
        return
    os.makedirs(log_dir, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.path.join(log_dir, RAY_DRIVER_LOG), "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def init_ray(
    num_cpus: int | None = None, verbose: bool = False, address: str | None = None
) -> bool:
    """Join ``address`` (``--address``) or RAY_ADDRESS when given, else start an embedded local
    Ray using all cores, private to this process and reachable on 127.0.0.1 only. Workers' output
    and Ray Data's progress bars reach the terminal only when ``verbose``. True when this call
    started an embedded Ray (this process may stop it: ``stop_ray_in_background``)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict = {"log_to_driver": verbose, "logging_level": logging.WARNING}
    joined = address or os.environ.get("RAY_ADDRESS")
    if joined:
        ray.init(address=joined, **kwargs)
    else:
        with single_node_loopback():
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                _node_ip_address=LOCAL_IP,
                object_store_memory=local_object_store_bytes(),
                **kwargs,
            )
        start_reaper()
    configure_data_context(verbose)
    return not joined


def stop_ray_in_background() -> threading.Thread:
    """``ray.shutdown`` in a thread, for a run whose analysis needs no Ray: the analysis runs
    meanwhile instead of after it. Shutdown stops Ray's daemons one at a time, each polled until
    it exits (1.3 s on 2 cores, measured), and the idle daemons and workers stop taking CPU
    from the analysis. The caller joins the thread before it returns."""
    import ray

    thread = threading.Thread(target=ray.shutdown, name="soundclust-ray-shutdown", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def single_node_loopback() -> Iterator[None]:
    """While an embedded Ray starts: Ray treats this machine as a single node, so the node IP
    stays 127.0.0.1 (see SINGLE_NODE_ENV). The environment variable reaches the daemons and
    workers Ray spawns (they inherit it at start); the module constant is what this process's
    already-imported ``ray`` reads. Both are restored afterwards, so a later join of a real
    cluster from the same process is unaffected. Never used when joining a cluster."""
    from ray._private import ray_constants

    saved_env = os.environ.get(SINGLE_NODE_ENV)
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_NODE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(SINGLE_NODE_ENV, None)
        else:
            os.environ[SINGLE_NODE_ENV] = saved_env


def start_reaper() -> None:
    """Watch this driver from a separate process and kill the embedded Ray's daemons if the
    driver dies without ``ray.shutdown`` (SIGKILL); see ``soundclust_ray.reaper``."""
    import subprocess
    import sys

    import psutil

    daemons = [f"{p.pid}:{p.create_time()}" for p in psutil.Process().children(recursive=True)]
    subprocess.Popen(
        [sys.executable, "-m", "soundclust_ray.reaper", str(os.getpid()), *daemons],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def local_object_store_bytes() -> int:
    """Object store of an embedded local Ray: 20 % of RAM, at most 4 GiB.

    Ray's own default (30 % of RAM) is sized for shuffles; this pipeline streams small blocks,
    and Ray Data's backpressure keeps in-flight blocks within a share of this budget, so a
    bounded store bounds the run's memory however large the corpus.
    """
    import psutil

    return int(
        min(
            LOCAL_OBJECT_STORE_MAX_BYTES,
            LOCAL_OBJECT_STORE_FRACTION * psutil.virtual_memory().total,
        )
    )


def configure_data_context(verbose: bool) -> None:
    """Ray Data's progress bars and execution banners only when verbose (soundclust prints its
    own progress); streaming without order preservation."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbose
    ctx.enable_operator_progress_bars = verbose
    ctx.print_on_execution_start = verbose
    ctx.execution_options.preserve_order = False


def ray_running() -> bool:
    """True when this process is connected to Ray; never imports Ray (2-3 s) to find out, so
    a run with nothing to compute stays quick."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def cluster_cpus() -> int:
    """Whole CPUs of the connected cluster (at least 1); the local CPU count outside Ray."""
    if not ray_running():
        return os.cpu_count() or 1
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def cluster_gpus() -> float:
    """GPUs Ray sees on the cluster, or torch's count outside Ray."""
    import ray

    if ray.is_initialized():
        return float(ray.cluster_resources().get("GPU", 0.0))
    import torch

    return float(torch.cuda.device_count())


def node_names() -> dict[str, str]:
    """Ray node id → 'hostname (ip) node <id prefix>' for run.json's per-node counts.

    The id prefix keeps nodes apart that share a host and address (several raylets on one
    machine, as in the local multi-node test), which would otherwise merge into one count.
    """
    if not ray_running():
        return {}
    import ray

    names = {}
    for n in ray.nodes():
        host, ip = n.get("NodeManagerHostname", "?"), n.get("NodeManagerAddress", "?")
        names[n["NodeID"]] = f"{host} ({ip}) node {n['NodeID'][:8]}"
    return names
