"""``soundclust run --dry-run``: the plan of a run (found, to compute, resumed, estimate)
without Ray, without shards, and without touching OUT."""

from __future__ import annotations

import os
import re
import sys

import soundfile as sf
from conftest import tone
from helpers import soundclust_probed

SR = 22050
BASE = ["--features", "timbre", "--embed", "none", "--no-analysis"]


def corpus(root, n: int):
    root.mkdir(exist_ok=True)
    for i in range(n):
        sf.write(root / f"c{i}.wav", tone(200 + 150 * i, 2.0, SR, noise=0.05, seed=i), SR)
    os.mkfifo(root / "pipe.wav")  # a bad row: listed with its reason, never read
    return root


def snapshot(folder) -> dict[str, int]:
    """Every path below ``folder`` with its modification time (ns)."""
    return {
        os.path.join(d, name): os.stat(os.path.join(d, name)).st_mtime_ns
        for d, dirs, files in os.walk(folder)
        for name in dirs + files
    }


def product_line(text: str, product: str) -> tuple[int, int]:
    found = re.search(rf"{re.escape(product)}\s+would compute\s+(\d+), resumed\s+(\d+)", text)
    assert found, text
    return int(found[1]), int(found[2])


def test_dry_run_on_a_new_out_plans_without_ray_or_writing(tmp_path):
    clips = corpus(tmp_path / "clips", 4)
    out = tmp_path / "out"
    text = soundclust_probed(["run", str(clips), "--out", str(out), "--dry-run", *BASE])
    assert "ray started: False" in text
    assert "5 rows" in text and "4 tracks, 1 bad rows" in text
    assert "not a regular file" in text and "pipe.wav" in text
    assert product_line(text, "features/timbre") == (4, 0)
    assert re.search(r"probe: 3 tracks, [\d.]+ s per track", text), text
    assert re.search(r"estimate: ~[\d.]+ (s|min|h) of compute and ~[\d.]+ [KMGT]?B", text), text
    assert "does not exist" in text
    assert not out.exists()


def test_dry_run_of_a_resumed_out_leaves_it_unchanged(tmp_path, ray_local):
    from soundclust_ray.cli import main

    clips = corpus(tmp_path / "clips", 3)
    out = tmp_path / "out"
    assert main(["run", str(clips), "--out", str(out), *BASE, "--quiet"]) == 0  # session Ray
    sf.write(clips / "new.wav", tone(3000.0, 2.0, SR, noise=0.05, seed=9), SR)
    before = snapshot(out)

    text = soundclust_probed(["run", str(clips), "--out", str(out), "--dry-run", *BASE])
    assert "ray started: False" in text
    assert "holds an earlier run: the run resumes it" in text
    assert product_line(text, "features/timbre") == (1, 3)
    assert re.search(r"probe: 1 tracks", text), text
    assert snapshot(out) == before

    overwrite = soundclust_probed(
        ["run", str(clips), "--out", str(out), "--dry-run", "--overwrite", *BASE]
    )
    assert product_line(overwrite, "features/timbre") == (4, 0)
    assert "--overwrite would delete its results" in overwrite
    assert snapshot(out) == before


def test_dry_run_in_process_refuses_a_foreign_out_and_leaves_ray_alone(tmp_path, capsys):
    from soundclust_ray.cli import main

    clips = corpus(tmp_path / "clips", 1)
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    def ray_up() -> bool:  # the session's Ray may be up from earlier tests: it must not change
        ray = sys.modules.get("ray")
        return bool(ray and ray.is_initialized())

    before = ray_up()
    assert main(["run", str(clips), "--out", str(out), "--dry-run", *BASE]) != 0
    assert "was not written by soundclust" in capsys.readouterr().err
    assert os.listdir(out) == ["notes.txt"]
    assert ray_up() == before


def test_dry_run_is_audio_only(tmp_path, capsys):
    from soundclust_ray.cli import main

    code = main(
        ["run", str(tmp_path), "--out", str(tmp_path / "o"), "--source", "msd", "--dry-run"]
    )
    assert code != 0 and "audio inputs only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
