"""Progress the user sees: per-product track counts and an analysis bar that reaches 100 %."""

from __future__ import annotations

import re
import sys

from helpers import config_with
from test_analysis_driver import make_out

from soundclust_ray import progress
from soundclust_ray.analysis import driver
from soundclust_ray.analysis.driver import STEP_COUNT, analyze


def test_plain_lines_name_the_product_count_tracks_and_give_rate_and_eta(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_PROGRESS_EVERY_S", 0.0)
    lines: list[str] = []
    counter = progress.TrackProgress("embeddings/musicnn", 10, lines.append, bars=True)
    counter.advance(4)
    counter.advance(6)
    counter.close()
    assert counter.bar is None  # pytest's stdout is not a terminal: lines, not a bar
    assert re.fullmatch(r"musicnn: 4/10 tracks, [\d.]+ tracks/s, ETA \d+ s", lines[0]), lines
    assert re.fullmatch(r"musicnn: 10/10 tracks, [\d.]+ tracks/s", lines[1]), lines


def test_plain_lines_are_rate_limited():
    lines: list[str] = []
    counter = progress.TrackProgress("features", 1000, lines.append, bars=False)
    for _ in range(1000):
        counter.advance(1)
    assert lines == []  # the whole loop took well under PLAIN_PROGRESS_EVERY_S


def test_eta_is_rounded_for_a_person():
    assert [progress.eta_text(s) for s in (12, 600, 9000)] == ["12 s", "10 min", "2.5 h"]


def test_the_analysis_bar_ends_at_100_percent_with_no_nested_bar(tmp_path, capsys, monkeypatch):
    make_out(tmp_path)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # the bar is drawn on terminals
    analyze(str(tmp_path), config_with(k=3), progress=True)
    drawn = capsys.readouterr().out  # stdout: a run's stderr goes to OUT/logs while Ray is up
    final = drawn.replace("\r", "\n").strip().splitlines()[-1]
    assert f"{STEP_COUNT}/{STEP_COUNT}" in final and "100%" in final, final
    assert "\x1b[A" not in drawn  # a nested bar moves the cursor up and leaves residue


def test_off_a_terminal_the_analysis_prints_plain_step_lines_and_no_bar(
    tmp_path, capsys, monkeypatch
):
    make_out(tmp_path)
    monkeypatch.setattr(driver, "PLAIN_PROGRESS_EVERY_S", 0.0)  # as if every step were long
    analyze(str(tmp_path), config_with(k=3), progress=True)
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err  # no redrawn bar in a log
    lines = captured.out.strip().splitlines()
    assert re.fullmatch(rf"analysis: gather \(step 1/{STEP_COUNT}, \d+ s so far\)", lines[0])
    assert lines[-1].startswith("analysis: write ("), lines
    steps = [int(re.search(r"\(step (\d+)/", line).group(1)) for line in lines]
    assert steps == sorted(steps) and steps[-1] > 1, lines  # the count advances


def test_off_a_terminal_a_short_analysis_prints_nothing(tmp_path, capsys):
    make_out(tmp_path)
    analyze(str(tmp_path), config_with(k=3), progress=True)
    captured = capsys.readouterr()
    assert "analysis" not in captured.out + captured.err
