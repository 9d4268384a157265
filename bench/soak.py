"""Soak test (minutes, not in CI): runs killed at random points and resumed end where an
uninterrupted run ends, a feature actor killed mid-batch loses nothing, and a full disk ends in
one line and an OUT that resumes.

    .venv/bin/python bench/soak.py [--tracks 1000] [--seconds 2] [--kills 5] [--seed 0]
                                   [--workdir DIR]

Every run is the real CLI in its own process (its own embedded Ray), features only
(``--features timbre --embed none --no-analysis``) so 1,000 tracks take minutes on 2 cores.

1. Synthesize ``--tracks`` clips of ``--seconds`` (seeded tones + noise).
2. Reference: one uninterrupted run into OUT_ref (its time, and the time to its first shard,
   are the yardsticks below), then the same command again: nothing left to do, it must change
   nothing.
3. Kill and resume: the same run into OUT_soak, its driver SIGKILLed (only the driver, as the
   OOM killer or ``kill -9`` would: the reaper must stop Ray's daemons) ``--kills`` times, each
   at a seeded random moment of what that run still had to do, then run to completion. After
   each kill: the driver's leftover Ray processes after 30 s (must be none), and every shard
   OUT lists must be readable (no half file). Each time the run is started again, it resumes.
4. Actor killed mid-batch: a run into OUT_actor whose busy feature actor (a Ray worker running
   a TrackStage batch) is SIGKILLed; the run must finish (exit 0).
5. Compare OUT_soak and OUT_actor with OUT_ref: features row for row (sorted by track_id) and
   errors.parquet (empty for these clean clips) must be equal.
6. Disk full (when ``mount -t tmpfs`` works, i.e. as root; else skipped and said so): a run of
   the first ``--disk-tracks`` clips into a small tmpfs already nearly full (a ballast file
   leaves less room than OUT needs) must exit non-zero with one line; with the ballast deleted
   the same command resumes to exit 0, and its features equal the reference's rows.

Prints one line per step and a final verdict; exit 0 when every check holds.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import soundfile as sf

from soundclust_ray import outdir, shards

SR = 22050
MARKER_ENV = "SOUNDCLUST_SOAK_MARKER"
"""Inherited by the driver's whole process tree (Ray daemons and workers), so the soak finds
exactly the processes of one run."""
REAP_WAIT_S = 30.0


def synthesize(folder: Path, n: int, seed: int, seconds: float) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(SR * seconds)) / SR
    for i in range(n):
        freq, noise = rng.uniform(80, 4000), rng.normal(size=t.size)
        y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * noise
        sf.write(folder / f"clip{i:05d}.wav", y.astype(np.float32), SR)


def command(folder: Path, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "soundclust_ray.cli",
        "run",
        str(folder),
        "--out",
        str(out),
        "--no-analysis",
        "--features",
        "timbre",
        "--embed",
        "none",
        "--quiet",
        *extra,
    ]


def start(folder: Path, out: Path, marker: str, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen(
        command(folder, out, extra),
        env={**os.environ, MARKER_ENV: marker},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def marked(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes of the run tagged ``marker``."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get(MARKER_ENV) == marker and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def reaped(marker: str) -> list[str]:
    """Wait for the run's processes to go; the names of those still alive after REAP_WAIT_S
    (then killed, so they cannot write into OUT while the next run resumes)."""
    deadline = time.time() + REAP_WAIT_S
    while time.time() < deadline and marked(marker):
        time.sleep(0.5)
    left = []
    for p in marked(marker):
        try:
            left.append(p.name())
            p.kill()
        except psutil.NoSuchProcess:
            continue
    return left


def run_to_end(
    folder: Path, out: Path, extra: tuple[str, ...] = (), marker: str = ""
) -> tuple[int, float, str]:
    started = time.perf_counter()
    proc = start(folder, out, marker or f"soak-{time.time_ns()}", extra)
    text, _ = proc.communicate()
    return proc.returncode, time.perf_counter() - started, text.strip()


def run_timed(folder: Path, out: Path) -> tuple[int, float, float, str]:
    """A run to its end: exit code, seconds, seconds until its first feature shard was listed
    (Ray start-up, listing and the first batches), output."""
    started = time.perf_counter()
    proc = start(folder, out, f"soak-ref-{time.time_ns()}")
    first_s = None
    while proc.poll() is None:
        if first_s is None and shards.list_shards(str(out), "features/timbre"):
            first_s = time.perf_counter() - started
        time.sleep(0.2)
    text, _ = proc.communicate()
    total_s = time.perf_counter() - started
    return proc.returncode, total_s, total_s if first_s is None else first_s, text.strip()


def listed_shards_readable(out: Path) -> tuple[int, list[str]]:
    """Rows in OUT's feature shards, and the listed shards that cannot be read (half files)."""
    rows, bad = 0, []
    for shard in shards.list_shards(str(out), "features/timbre"):
        try:
            rows += pd.read_parquet(shard).shape[0]
        except Exception:  # noqa: BLE001 — any unreadable listed shard is the finding
            bad.append(shard)
    return rows, bad


def features(out: Path) -> pd.DataFrame:
    frames = [t.to_pandas() for t in shards.iter_shard_tables(str(out), "features/timbre")]
    return pd.concat(frames).sort_values("track_id").reset_index(drop=True)


def errors(out: Path) -> pd.DataFrame:
    path = Path(outdir.path(str(out), outdir.ERRORS))
    table = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    if table.empty:
        return table
    return table.sort_values(list(table.columns[:1])).reset_index(drop=True)


def same_outputs(ref: Path, got: Path) -> tuple[bool, bool]:
    return features(ref).equals(features(got)), errors(ref).equals(errors(got))


def kill_and_resume(
    folder: Path, work: Path, reference_s: float, first_shard_s: float, kills: int, seed: int
) -> bool:
    """The first kill lands before the run's first shard (a seeded moment of the reference's
    time to its first shard: start-up and first batches); each later one once that run has
    written a shard of its own, after a seeded share of the reference's time for the tracks
    still to do; so the kills fall mid-compute and interleave with progress however loaded the
    machine is."""
    out = work / "out_soak"
    rng = random.Random(seed)
    n_tracks = len(features(work / "out_ref"))
    compute_s = max(1.0, reference_s - first_shard_s)
    started = time.perf_counter()
    ok = True
    for i in range(kills):
        before, _ = listed_shards_readable(out)
        share = rng.uniform(0.2, 0.9) if i == 0 else rng.uniform(0.0, 0.8)
        marker = f"soak-kill{i}-{time.time_ns()}"
        run_started = time.perf_counter()
        proc = start(folder, out, marker)
        if i == 0:
            phase, delay_s = "before its first shard", share * first_shard_s
        else:
            while proc.poll() is None and listed_shards_readable(out)[0] <= before:
                time.sleep(0.2)
            now, _ = listed_shards_readable(out)
            phase = (
                f"mid-compute, {now - before} tracks into this run"
                if now < n_tracks
                else "after its last shard, while it finishes"
            )
            delay_s = share * (1 - now / n_tracks) * compute_s
        ended = proc.poll() is not None  # done before it wrote a shard: nothing to kill
        if not ended:
            try:
                proc.wait(timeout=delay_s)
                ended = True
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        text, _ = proc.communicate()
        if ended:
            status = f"ended by itself before the kill, exit {proc.returncode}"
            ok &= proc.returncode == 0
            if proc.returncode:
                print(text.strip())
        else:
            status = (
                f"driver SIGKILLed {time.perf_counter() - run_started:5.1f} s after its start "
                f"({phase}; exit {proc.returncode})"
            )
        left = reaped(marker)
        rows, bad = listed_shards_readable(out)
        ok &= not left and not bad
        print(
            f"  kill {i + 1}/{kills}: {status}; Ray processes left after "
            f"{REAP_WAIT_S:.0f} s: {len(left)} {left or ''}; tracks in shards: {before} -> "
            f"{rows}; unreadable listed shards: {len(bad)}",
            flush=True,
        )
    code, last_s, text = run_to_end(folder, out)
    total_s = time.perf_counter() - started
    feats_equal, errors_equal = same_outputs(work / "out_ref", out)
    n = len(features(out)) if code == 0 else 0
    print(
        f"kill and resume: final run exit {code} ({last_s:.1f} s); {n} tracks; features equal "
        f"to the uninterrupted run: {feats_equal}; errors equal: {errors_equal}; "
        f"{total_s:.1f} s in all = {total_s / reference_s:.2f}x the uninterrupted run",
        flush=True,
    )
    if code:
        print(text)
    return ok and code == 0 and feats_equal and errors_equal


def busy_feature_workers(marker: str) -> list[psutil.Process]:
    """The run's Ray workers running a TrackStage batch right now (Ray sets their title)."""
    busy = []
    for p in marked(marker):
        try:
            title = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "TrackStage" in title and ".submit" in title:
            busy.append(p)
    return busy


def actor_killed_mid_batch(folder: Path, work: Path) -> bool:
    out = work / "out_actor"
    marker = f"soak-actor-{time.time_ns()}"
    started = time.perf_counter()
    proc = start(folder, out, marker)
    killed = None
    while killed is None and proc.poll() is None:
        workers = busy_feature_workers(marker)  # a batch under way in this actor
        if workers:
            rows, _ = listed_shards_readable(out)
            workers[0].kill()
            killed = (workers[0].pid, rows)
        time.sleep(0.1)
    text, _ = proc.communicate()
    seconds = time.perf_counter() - started
    reaped(marker)
    feats_equal = errors_equal = False
    if proc.returncode == 0:
        feats_equal, errors_equal = same_outputs(work / "out_ref", out)
    where = f"pid {killed[0]} after {killed[1]} tracks were in shards" if killed else "none found"
    print(
        f"actor killed mid-batch: {where}; run exit {proc.returncode} ({seconds:.1f} s); "
        f"features equal: {feats_equal}; errors equal: {errors_equal}",
        flush=True,
    )
    if proc.returncode:
        print(text.strip())
    return killed is not None and proc.returncode == 0 and feats_equal and errors_equal


def disk_full(folder: Path, work: Path, n_tracks: int) -> bool | None:
    """A run into a tmpfs with less room than OUT needs: exit != 0 and one line; with room made
    (the ballast deleted) the same command resumes to exit 0 and the reference's features."""
    mount = work / "tiny"
    mount.mkdir(exist_ok=True)
    size_mb = 64
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        print(f"disk full: skipped (mount -t tmpfs not permitted here: {done.stderr.strip()})")
        return None
    try:
        # Room for the small files written first (manifest, marker, lock, Ray's driver log) and
        # about a third of the features: the run must fail mid-way, in a shard write.
        ref_features = sum(
            os.path.getsize(s) for s in shards.list_shards(str(work / "out_ref"), "features/timbre")
        )
        per_track = ref_features / len(features(work / "out_ref"))
        room = 256 * 1024 + int(per_track * n_tracks / 3)
        ballast = mount / "ballast"
        with open(ballast, "wb") as f:
            free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
            f.write(b"\0" * max(0, free - room))
        out = mount / "out"
        extra = ("--limit", str(n_tracks), "--shard-rows", str(max(1, n_tracks // 10)))
        code, seconds, text = run_to_end(folder, out, extra)
        lines = text.splitlines()
        free_kib = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize // 1024
        print(
            f"disk full ({n_tracks} tracks, {room // 1024} KiB of room): exit {code} "
            f"({seconds:.1f} s), {len(lines)} line(s) of output, {free_kib} KiB left free:",
            flush=True,
        )
        for line in lines[-12:]:
            print(f"    | {line}")
        rows, bad = listed_shards_readable(out)
        ballast.unlink()
        resumed, seconds, text = run_to_end(folder, out, extra)
        ref = features(work / "out_ref")
        got = features(out) if resumed == 0 else pd.DataFrame()
        equal = len(got) == n_tracks and (
            ref[ref["track_id"].isin(got["track_id"])].reset_index(drop=True).equals(got)
        )
        print(
            f"  after the failure: {rows} tracks in shards, unreadable listed shards: {len(bad)}; "
            f"ballast deleted, rerun: exit {resumed} ({seconds:.1f} s); "
            f"{len(got)} tracks, features equal to the reference's: {equal}",
            flush=True,
        )
        if resumed:
            print(text)
        return code != 0 and len(lines) == 1 and not bad and resumed == 0 and equal
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--disk-tracks", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="soundclust-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "clips"
    t0 = time.perf_counter()
    synthesize(folder, args.tracks, args.seed, args.seconds)
    made_s = time.perf_counter() - t0
    print(f"{args.tracks} clips of {args.seconds:g} s in {folder} ({made_s:.1f} s)", flush=True)

    code, reference_s, first_shard_s, text = run_timed(folder, work / "out_ref")
    if code:
        print(f"reference run failed (exit {code}):\n{text}")
        return 1
    ref = features(work / "out_ref")
    print(
        f"uninterrupted run: exit 0, {reference_s:.1f} s (first shard after "
        f"{first_shard_s:.1f} s), {len(ref)} tracks, {len(errors(work / 'out_ref'))} error rows",
        flush=True,
    )
    code, noop_s, text = run_to_end(folder, work / "out_ref")
    unchanged = code == 0 and features(work / "out_ref").equals(ref)
    print(
        f"rerun of the finished OUT (nothing left to do): exit {code}, {noop_s:.1f} s, "
        f"features unchanged: {unchanged}",
        flush=True,
    )
    results = {
        "rerun of a finished OUT": unchanged,
        "kill and resume": kill_and_resume(
            folder, work, reference_s, first_shard_s, args.kills, args.seed
        ),
        "actor killed mid-batch": actor_killed_mid_batch(folder, work),
        "disk full": disk_full(folder, work, min(args.disk_tracks, args.tracks)),
    }
    verdict = ", ".join(
        f"{name}: {'skipped' if ok is None else 'ok' if ok else 'FAILED'}"
        for name, ok in results.items()
    )
    passed = all(v is not False for v in results.values())
    print(
        f"soak {'passed' if passed else 'FAILED'}: {verdict} "
        f"({time.perf_counter() - t0:.0f} s in all; work dir {work})"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
