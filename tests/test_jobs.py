"""The jobs/ entrypoints: same options as the CLI, each part's fixed settings win, clear errors."""

from __future__ import annotations

import runpy
import sys

import pytest
from conftest import REPO

from soundclust_ray.cli import build_parser

sys.path.insert(0, str(REPO / "jobs"))
import _job  # noqa: E402

JOBS = ["run", "extract_features", "embed", "analyze"]


def run_job(name: str, *args: str, capsys, monkeypatch) -> tuple[int, str, str]:
    """Run ``jobs/<name>.py`` as ``__main__`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [f"jobs/{name}.py", *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "jobs" / f"{name}.py"), run_name="__main__")
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize("name", JOBS)
def test_every_job_takes_the_cli_options(name, capsys, monkeypatch):
    code, out, err = run_job(name, "--help", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, err
    assert "--quiet" in out and "--k" in out and "--cluster-cpus" in out
    if name != "analyze":
        assert "--out" in out and "--max-duration" in out


def test_part_jobs_fix_their_part_whatever_the_user_passes():
    parser = build_parser()
    features = parser.parse_args(_job.compose(
        "run", ["in.csv", "--out", "o", "--embed", "clap", "--features", "timbre,classic"],
        after=["--embed", "none", "--no-analysis"]))
    assert features.embed == () and features.no_analysis
    assert features.features == ("timbre", "classic")
    embed = parser.parse_args(_job.compose(
        "run", ["in.csv", "--out", "o", "--embed", "clap,musicnn", "--clap-batch", "16"],
        after=["--features", "none", "--no-analysis"]))
    assert embed.features == () and embed.embed == ("clap", "musicnn") and embed.clap_batch == 16


def test_scale_options_are_taken_out_before_the_cli_sees_them():
    scale, rest = _job.scale_options().parse_known_args(
        ["in", "--out", "o", "--cluster-cpus", "32", "--cluster-gpus", "2", "--k", "5"])
    assert (scale.cluster_cpus, scale.cluster_gpus) == (32, 2)
    assert build_parser().parse_args(["run", *rest]).k == 5


def test_jobs_report_user_errors_in_one_line(tmp_path, capsys, monkeypatch):
    kw = {"capsys": capsys, "monkeypatch": monkeypatch}
    code, _, err = run_job("extract_features", str(tmp_path / "nope"), "--out", str(tmp_path), **kw)
    assert code == 2 and err.startswith("error: input not found") and len(err.splitlines()) == 1
    code, _, err = run_job("embed", str(tmp_path), "--out", str(tmp_path / "o"), **kw)
    assert code == 2 and "--embed" in err
    code, _, err = run_job("analyze", str(tmp_path / "o"), **kw)
    assert code == 2 and "manifest.parquet" in err
