"""Reap an embedded Ray's daemons when the driver that started them dies.

``ray.shutdown`` stops them on a normal exit; a driver killed by SIGKILL (OOM killer, a
``kill -9``, a crashed terminal) runs no exit handler, and gcs_server, raylet and the agents
would live on holding memory and ports. ``ray_env`` starts this watchdog as its own process
(own session, so it outlives the driver) with the driver's pid and the daemons' pids and start
times; when the driver is gone it kills each daemon that is still the same process (a pid
reused by another program is left alone) and the daemons' own children (Ray workers).

    python -m soundclust_ray.reaper DRIVER_PID PID:CREATE_TIME ...
"""

from __future__ import annotations

import sys
import time

import psutil

POLL_S = 0.5


def same_process(pid: int, created: float) -> psutil.Process | None:
    """The process ``pid`` if it is still the one started at ``created``, else None."""
    try:
        process = psutil.Process(pid)
        return process if abs(process.create_time() - created) < 1.0 else None
    except psutil.NoSuchProcess:
        return None


def reap(daemons: list[tuple[int, float]]) -> None:
    """SIGKILL every daemon still alive, and its children."""
    for pid, created in daemons:
        process = same_process(pid, created)
        if process is None:
            continue
        try:
            family = [*process.children(recursive=True), process]
        except psutil.NoSuchProcess:
            continue
        for member in family:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                continue


def driver_alive(pid: int) -> bool:
    """True while the driver runs (a killed driver its parent has not reaped yet is a zombie)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def main(argv: list[str]) -> None:
    driver = int(argv[0])
    daemons = [(int(p), float(t)) for p, t in (a.split(":", 1) for a in argv[1:])]
    while driver_alive(driver):
        time.sleep(POLL_S)
    reap(daemons)


if __name__ == "__main__":
    main(sys.argv[1:])
