"""Reliability for long reprocessing runs: kill and resume, dead workers, hostile inputs.

These tests drive the real CLI (in a subprocess where a crash must be simulated) on a local Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import BAD, tone

from soundclust_ray import outdir, outguard, shards
from soundclust_ray.cli import main
from soundclust_ray.errors import UserError

pytestmark = pytest.mark.ray


def read_features(out: Path) -> pd.DataFrame:
    frames = [t.to_pandas() for t in shards.iter_shard_tables(str(out), "features/timbre")]
    return pd.concat(frames).sort_values("track_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """24 short clips: enough batches for a kill to land mid-run. The tests that use it
    compute features only (--embed none): the shard, kill and resume mechanics under test
    are the same for every product, and embedding would cost minutes of the CI budget."""
    root = tmp_path_factory.mktemp("kill_corpus")
    for i in range(24):
        sf.write(root / f"t{i:02d}.wav", tone(100 + 40 * i, 4.0, 22050, noise=0.1, seed=i), 22050)
    return root


def kill_marked_processes(marker: str) -> None:
    """SIGKILL every process that inherited ``marker`` (the crashed driver's own Ray daemons)."""
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("SOUNDCLUST_TEST_MARKER") == marker:
                p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


def run_cli_subprocess(args: list[str], marker: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SOUNDCLUST_TEST_MARKER": marker}
    return subprocess.Popen(
        [sys.executable, "-m", "soundclust_ray.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(
    corpus, tmp_path, ray_local, capsys
):
    # Features only: the shard protocol under test is the same for every product, and three
    # CLI runs with the default musicnn embedding would cost minutes of the CI budget.
    common = [
        "--embed",
        "none",
        "--num-cpus",
        "1",
        "--batch-size",
        "1",
        "--shard-rows",
        "1",
        "--no-analysis",
        "--quiet",
    ]
    killed_out = tmp_path / "killed"
    marker = f"kill-test-{os.getpid()}-{time.time()}"
    proc = run_cli_subprocess(["run", str(corpus), "--out", str(killed_out), *common], marker)
    deadline = time.time() + 240
    try:
        while len(shards.list_shards(str(killed_out), "features/timbre")) < 3:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.time() < deadline, "no shards appeared"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kill_marked_processes(marker)
    listed = shards.list_shards(str(killed_out), "features/timbre")
    assert 3 <= len(listed) < 24
    leftovers = {str(p) for p in killed_out.glob(f"features/{outdir.TMP_PREFIX}*")}
    assert leftovers.isdisjoint(listed)
    assert all(pq.read_metadata(path).num_rows > 0 for path in listed)

    # Only the killed run needs a process of its own; the resume and the reference run on the
    # session's Ray (the same code path, without two more Ray start-ups).
    capsys.readouterr()
    assert main(["run", str(corpus), "--out", str(killed_out), *common[:-1]]) == 0
    assert "already in" in capsys.readouterr().out

    clean_out = tmp_path / "clean"
    assert main(["run", str(corpus), "--out", str(clean_out), *common]) == 0

    resumed, reference = read_features(killed_out), read_features(clean_out)
    assert resumed["track_id"].is_unique and len(resumed) == 24
    pd.testing.assert_frame_equal(resumed, reference)


def busy_feature_workers() -> list[psutil.Process]:
    """Ray worker processes currently running a TrackStage batch (Ray sets their title)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        title = " ".join(p.info["cmdline"] or [])
        if "TrackStage" in title and ".submit" in title:
            found.append(p)
    return found


def test_killed_feature_worker_loses_nothing(corpus, tmp_path, ray_local):
    out = tmp_path / "dead_worker"
    result: dict = {}

    def run():
        result["code"] = main(
            [
                "run",
                str(corpus),
                "--out",
                str(out),
                "--batch-size",
                "1",
                "--shard-rows",
                "1",
                "--embed",
                "none",
                "--no-analysis",
                "--quiet",
            ]
        )

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and thread.is_alive():
        if shards.list_shards(str(out), "features/timbre"):
            workers = busy_feature_workers()
            if workers:
                workers[0].kill()
                killed = workers[0].pid
        time.sleep(0.05)
    thread.join(timeout=300)
    assert killed is not None, "no feature worker was found to kill"
    assert result["code"] == 0
    features = read_features(out)
    assert features["track_id"].is_unique and len(features) == 24
    assert len(pd.read_parquet(out / "errors.parquet")) == 0


def test_new_files_in_the_input_folder_are_the_only_ones_processed(
    corpus, tmp_path, ray_local, capsys
):
    folder = tmp_path / "grow"
    shutil.copytree(corpus, folder)
    out = tmp_path / "grow_out"
    args = ["run", str(folder), "--out", str(out), "--embed", "none", "--no-analysis"]
    assert main([*args, "--quiet"]) == 0
    first = read_features(out)
    sf.write(folder / "new_one.wav", tone(3000, 2.0, 22050), 22050)
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "24 tracks already in" in text and "1 tracks written" in text
    second = read_features(out)
    assert len(second) == 25
    pd.testing.assert_frame_equal(
        second[second["track_id"] != "new_one.wav"].reset_index(drop=True), first
    )


def write_hostile_corpus(root: Path) -> pd.DataFrame:
    """Every kind of awkward input we know of, plus a manifest that lists them all."""
    sr = 22050
    audio = root / "audio"
    audio.mkdir()
    y = tone(330, 3.0, sr, noise=0.05)
    sf.write(audio / "wav_named.mp3", y, sr)
    sf.write(audio / "pcm_u8.wav", y, sr, subtype="PCM_U8")
    sf.write(audio / "pcm_24.wav", y, sr, subtype="PCM_24")
    sf.write(audio / "six_channels.wav", np.stack([y] * 6, axis=1), sr)
    sf.write(audio / "rate_8k.wav", tone(330, 3.0, 8000), 8000)
    sf.write(audio / "rate_192k.flac", tone(330, 3.0, 192000), 192000)
    two_hours = np.zeros(2 * 3600 * 8000, dtype=np.float32)
    two_hours[: 8000 * 20] = tone(220, 20.0, 8000)
    sf.write(audio / "two_hours.flac", two_hours, 8000)
    (audio / "dir.wav").mkdir()
    (audio / "broken_link.wav").symlink_to(audio / "does_not_exist.wav")
    locked = audio / "locked.wav"
    sf.write(locked, y, sr)
    locked.chmod(0)
    sf.write(audio / "ünï cödé & spaces.wav", y, sr)
    for name in os.listdir(BAD):
        if name.endswith((".wav", ".mp3", ".flac")):
            shutil.copy(BAD / name, audio / name)
    rows = [{"track_id": p.name, "path": f"audio/{p.name}"} for p in sorted(audio.iterdir())]
    rows.append({"track_id": "pcm_24.wav", "path": "audio/pcm_u8.wav"})
    rows.append({"track_id": "escapes", "path": "../../etc/hostname"})
    rows.append({"track_id": "missing", "path": "audio/not_there.ogg"})
    manifest = pd.DataFrame(rows)
    manifest.to_csv(root / "manifest.csv", index=False)
    return manifest


def test_hostile_inputs_each_give_a_result_or_a_clear_error_row(tmp_path, ray_local, shared_data):
    manifest = write_hostile_corpus(tmp_path)
    out = tmp_path / "out"
    code = main(
        [
            "run",
            str(tmp_path / "manifest.csv"),
            "--out",
            str(out),
            "--quiet",
            "--embed",
            "none",
            "--k",
            "2",
            "--max-error-rate",
            "0.9",
        ]
    )
    assert code == 0
    clusters = pd.read_parquet(out / "clusters.parquet")
    errors = pd.read_parquet(out / "errors.parquet")
    assert len(clusters) + len(errors) == len(manifest)
    assert set(clusters["track_id"]).isdisjoint(errors["track_id"])
    ok = set(clusters["track_id"])
    for name in (
        "wav_named.mp3",
        "pcm_u8.wav",
        "pcm_24.wav",
        "six_channels.wav",
        "rate_8k.wav",
        "rate_192k.flac",
        "two_hours.flac",
        "ünï cödé & spaces.wav",
        "silence_10s.wav",
        "truncated.wav",
    ):
        assert name in ok, name
    if os.geteuid() != 0:
        assert "locked.wav" in set(errors["track_id"])
    reasons = errors.set_index("track_id")["message"]
    assert reasons["dir.wav"].startswith("is a directory")
    assert reasons["broken_link.wav"].startswith("file not found")
    assert reasons["missing"].startswith("file not found")
    assert "escapes the manifest's folder" in reasons["escapes"]
    assert reasons["pcm_24.wav#dup1"].startswith("duplicate track_id")
    assert reasons["empty.wav"].startswith("empty file")
    assert "NaN" in reasons["nan_samples.wav"]
    assert "too short" in reasons["too_short_0.2s.wav"]
    assert all(m and "\n" not in m for m in errors["message"])
    run = json.loads((out / "run.json").read_text())
    assert run["n_input_rows"] == len(manifest)


def write_hostile_folder(root: Path) -> set[str]:
    """A folder with entries a scan must not crash on or block on; returns the good track ids."""
    sr = 22050
    outside = root / "outside"
    outside.mkdir()
    sf.write(outside / "secret.wav", tone(440, 2.0, sr), sr)
    audio = root / "audio"
    audio.mkdir()
    good = {"good_a.wav", "sub/good_b.wav", "inner_link.wav"}
    sf.write(audio / "good_a.wav", tone(220, 3.0, sr, noise=0.05), sr)
    (audio / "sub").mkdir()
    sf.write(audio / "sub" / "good_b.wav", tone(660, 3.0, sr, noise=0.05, seed=1), sr)
    (audio / "inner_link.wav").symlink_to(audio / "good_a.wav")
    (audio / "out_link.wav").symlink_to(outside / "secret.wav")
    (audio / "linked_dir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(audio / "pipe.wav")
    with open(os.path.join(os.fsencode(audio), b"caf\xe9.wav"), "wb") as f:
        f.write((audio / "good_a.wav").read_bytes())
    return good


@pytest.mark.timeout(600)
def test_hostile_folder_entries_are_error_rows_and_nothing_blocks(tmp_path, ray_local):
    good = write_hostile_folder(tmp_path)
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "audio"), "--out", str(out), "--quiet", "--no-analysis"]
    args += ["--embed", "none"]
    assert main([*args, "--max-error-rate", "0.9"]) == 0
    errors = pd.read_parquet(out / "errors.parquet").set_index("track_id")["message"]
    assert set(read_features(out)["track_id"]) == good
    assert set(errors.index) == {"out_link.wav", "pipe.wav", "caf\\xe9.wav"}
    assert "escapes" in errors["out_link.wav"] and "FIFO" in errors["pipe.wav"]
    assert "not valid UTF-8" in errors["caf\\xe9.wav"]
    assert len(pd.read_parquet(out / "manifest.parquet")) == len(good) + len(errors)


OLD_OUT = Path(__file__).parent / "data" / "old_out"


def test_a_file_or_uncreatable_out_is_one_line_before_anything_runs(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        outguard.check_out_usable(str(tmp_path / "file"))
    with pytest.raises(UserError, match="cannot be created"):
        outguard.check_out_usable(str(tmp_path / "file" / "sub"))
    outguard.check_out_usable(str(tmp_path / "new" / "out"))
    assert (tmp_path / "new" / "out").is_dir()


def test_a_foreign_non_empty_folder_is_refused_and_never_touched(tmp_path):
    audio = tmp_path / "music"
    audio.mkdir()
    (audio / "song.wav").write_bytes(b"precious")
    with pytest.raises(UserError, match="not empty .*not written by soundclust"):
        outguard.claim_out(str(audio), [str(audio)])
    assert os.listdir(audio) == ["song.wav"]


def test_overwrite_removes_only_what_soundclust_owns_and_keeps_the_input(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    marker = outguard.claim_out(str(out), [])
    for name in ("features", "embeddings/clap", "corpus/rock"):
        (out / name).mkdir(parents=True)
        (out / name / "part-1.parquet").write_bytes(b"x")
    (out / "run.json").write_text("{}")
    (out / "notes_of_the_user.txt").write_text("mine")
    removed = outguard.remove_owned(str(out), marker, [str(out / "corpus" / "labels.csv")])
    assert removed == ["embeddings", "features", "run.json"]
    assert sorted(os.listdir(out)) == [".soundclust.json", "corpus", "notes_of_the_user.txt"]
    with pytest.raises(UserError, match="is the input folder"):
        outguard.remove_owned(str(out), marker, [str(out)])


def test_an_old_format_out_is_adopted_in_place(tmp_path):
    out = tmp_path / "old_out"
    shutil.copytree(OLD_OUT, out)
    before = sorted(os.listdir(out))
    marker = outguard.claim_out(str(out), [str(tmp_path / "clips")])
    assert marker["adopted"] == [n for n in before if n in outguard.OWNED_NAMES]
    assert sorted(os.listdir(out)) == sorted([*before, ".soundclust.json"])
    assert outguard.claim_out(str(out), []) == marker
    (out / ".soundclust.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(UserError, match="newer soundclust"):
        outguard.claim_out(str(out), [])


def test_one_writer_at_a_time_and_a_dead_holder_is_stale(tmp_path):
    out = str(tmp_path)
    with outguard.hold_lock(out):
        held = json.loads((tmp_path / ".soundclust.lock").read_text())
        assert held["pid"] == os.getpid()
        with (
            pytest.raises(UserError, match=f"in use by pid {os.getpid()}"),
            outguard.hold_lock(out),
        ):
            pass
    assert not (tmp_path / ".soundclust.lock").exists()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = {**held, "pid": int(dead.stdout)}
    (tmp_path / ".soundclust.lock").write_text(json.dumps(stale))
    with outguard.hold_lock(out):
        assert json.loads((tmp_path / ".soundclust.lock").read_text())["pid"] == os.getpid()


def test_a_truncated_shard_is_moved_to_quarantine(tmp_path):
    import pyarrow as pa

    from soundclust_ray import outdir

    fs, base = outdir.resolve(str(tmp_path))
    table = pa.table({"track_id": ["a", "b"], "x": [1.0, 2.0]})
    outdir.write_table_atomic(fs, f"{base}/features/part-good.parquet", table)
    outdir.write_table_atomic(fs, f"{base}/features/part-bad.parquet", table)
    bad = tmp_path / "features" / "part-bad.parquet"
    bad.write_bytes(bad.read_bytes()[:-20])
    assert outguard.quarantine_broken_shards(str(tmp_path), "features") == [
        "features/part-bad.parquet"
    ]
    assert os.listdir(tmp_path / "features") == ["part-good.parquet"]
    assert os.listdir(tmp_path / "quarantine") == ["features__part-bad.parquet"]


def test_resume_recomputes_changed_files_and_forgets_removed_ones(tmp_path, ray_local, capsys):
    folder = tmp_path / "music"
    folder.mkdir()
    for i in range(4):
        sf.write(folder / f"t{i}.wav", tone(200 + 150 * i, 3.0, 22050, noise=0.05, seed=i), 22050)
    out = tmp_path / "out"
    args = ["run", str(folder), "--out", str(out), "--no-analysis", "--features", "timbre"]
    args += ["--embed", "none"]
    assert main([*args, "--quiet"]) == 0
    first = read_features(out).set_index("track_id")
    sf.write(folder / "t1.wav", tone(3000, 3.0, 22050, noise=0.3, seed=9), 22050)
    (folder / "t3.wav").unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert "resume: 1 changed files recomputed, 1 tracks no longer" in capsys.readouterr().out
    second = read_features(out).set_index("track_id")
    assert sorted(second.index) == ["t0.wav", "t1.wav", "t2.wav"]
    pd.testing.assert_frame_equal(second.loc[["t0.wav", "t2.wav"]], first.loc[["t0.wav", "t2.wav"]])
    fresh = tmp_path / "fresh"
    assert (
        main(
            [
                "run",
                str(folder),
                "--out",
                str(fresh),
                "--no-analysis",
                "--features",
                "timbre",
                "--embed",
                "none",
                "--quiet",
            ]
        )
        == 0
    )
    pd.testing.assert_frame_equal(second.sort_index(), read_features(fresh).set_index("track_id"))
    assert not np.allclose(second.loc["t1.wav"].to_numpy(), first.loc["t1.wav"].to_numpy())


def test_a_truncated_shard_is_named_by_analyze_and_recomputed_by_run(tmp_path, ray_local, capsys):
    folder = tmp_path / "music"
    folder.mkdir()
    for i in range(3):
        sf.write(folder / f"t{i}.wav", tone(300 + 200 * i, 3.0, 22050, noise=0.05, seed=i), 22050)
    out = tmp_path / "out"
    args = ["run", str(folder), "--out", str(out), "--features", "timbre", "--quiet"]
    args += ["--embed", "none"]
    assert main([*args, "--no-analysis"]) == 0
    first = read_features(out)
    shard = sorted((out / "features" / "timbre").iterdir())[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    capsys.readouterr()
    assert main(["analyze", str(out), "--k", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and shard.name in err and "unreadable" in err
    assert main([*args, "--no-analysis"]) == 0
    assert (out / "quarantine" / f"features__timbre__{shard.name}").exists()
    pd.testing.assert_frame_equal(read_features(out), first)


def marked_processes(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("SOUNDCLUST_TEST_MARKER") == marker:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_a_sigkilled_driver_leaves_no_ray_daemons_behind(corpus, tmp_path):
    marker = f"reap-{os.getpid()}-{time.time_ns()}"
    args = ["run", str(corpus), "--out", str(tmp_path / "out"), "--no-analysis", "--quiet"]
    proc = run_cli_subprocess(args, marker)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if "raylet" in {p.name() for p in marked_processes(marker)}:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before Ray was up"
    time.sleep(2)
    proc.kill()
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and marked_processes(marker):
        time.sleep(0.5)
    left = [p.name() for p in marked_processes(marker)]
    kill_marked_processes(marker)
    assert left == []
