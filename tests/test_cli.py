"""The command line: help texts with defaults, and one clear line + exit 2 for user errors."""

from __future__ import annotations

import pytest
from conftest import GTZAN

from soundclust_ray.cli import build_parser, main


@pytest.mark.parametrize("command", ["run", "demo", "analyze", "similar"])
def test_every_command_has_help_with_defaults(command, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "(default:" in text


def test_run_help_documents_the_main_options(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--features",
        "--k",
        "--label-col",
        "--limit",
        "--embed",
        "--quiet",
        "--overwrite",
    ):
        assert option in text


def test_missing_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: input not found")


def test_manifest_without_path_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("file,genre\na.wav,rock\n")
    assert main(["run", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no 'path' column" in err[0]


def test_unknown_family_and_label_column_are_user_errors(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("path,genre\na.wav,rock\n")
    assert (
        main(["run", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o"), "--features", "bogus"])
        == 2
    )
    assert "unknown feature family bogus" in capsys.readouterr().err
    assert (
        main(["run", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o"), "--label-col", "mood"])
        == 2
    )
    assert "--label-col 'mood' is not a manifest column" in capsys.readouterr().err


def test_k_must_be_an_integer_or_auto():
    parser = build_parser()
    assert parser.parse_args(["run", "x", "--out", "o", "--k", "auto"]).k == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "x", "--out", "o", "--k", "1"])


def test_analysis_options_reach_the_config():
    from soundclust_ray.cli import analysis_config

    args = build_parser().parse_args(
        ["analyze", "o", "--weights", "timbre=1,musicnn=2", "--backend", "musicnn", "--no-umap"]
    )
    cfg = analysis_config(args)
    assert cfg.weights == (("timbre", 1.0), ("musicnn", 2.0))
    assert cfg.backend == "musicnn" and cfg.umap is False and cfg.hdbscan is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["analyze", "o", "--weights", "timbre"])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "x", "--out", "o", "--embedd", "clap"], "did you mean --embed?"),
        (["analyze", "o", "--k", "0"], "k must be ≥ 2"),
        (["analyze", "o", "--pca", "abc"], "a variance fraction below 1"),
        (["run", "x", "--ou", "o"], "required: --out"),  # no abbreviations
    ],
)
def test_option_mistakes_are_one_line_without_usage(argv, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and expected in err
    assert err.count("\n") == 1 and "usage:" not in err


def test_version(capsys):
    from soundclust_ray import __version__

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"soundclust {__version__}"


def test_summary_ends_with_the_report_to_open(tmp_path, capsys):
    from soundclust_ray.cli import print_summary

    info = {"products": {}, "n_failed": 0}
    print_summary(str(tmp_path), info, None, 1.0)
    assert "open " not in capsys.readouterr().out
    (tmp_path / "report.html").write_text("<html></html>")
    print_summary(str(tmp_path), info, None, 1.0)
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == f"  open {tmp_path}/report.html"


RAY_LINE_PATTERNS = (
    r"core_worker\.cc",
    r"authentication_token_setup",
    r"streaming_executor",
    r"logging_progress",
    r"UserWarning",
    r"Running Dataset",
    r"\(MapWorker|\(raylet\)|ray::",
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|WARNING|ERROR)",
)
GTZAN_MINI = str(GTZAN / "labels.csv")


@pytest.mark.ray
@pytest.mark.slow
def test_a_run_prints_only_soundclust_lines_and_keeps_rays_in_out_logs(tmp_path):
    """The user's terminal (stdout and stderr, here a file) gets no Ray log line; Ray's own
    output lands in OUT/logs/ instead."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "out"
    argv = ["run", GTZAN_MINI, "--out", str(out), "--limit", "3", "--embed", "none"]
    done = subprocess.run(
        [sys.executable, "-m", "soundclust_ray.cli", *argv, "--no-analysis"],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr
    printed = (done.stdout + done.stderr).splitlines()
    ray_lines = [line for line in printed if any(re.search(p, line) for p in RAY_LINE_PATTERNS)]
    assert ray_lines == []
    assert "features/timbre: 3 tracks written" in done.stdout
    logs = list((out / "logs").iterdir())
    assert logs and any(Path(p).stat().st_size > 0 for p in logs)


def test_config_backend_names_are_the_registry(tmp_path):
    """The torch-free list the CLI checks against is exactly what the registry can load."""
    from soundclust_ray.config import EMBED_BACKEND_NAMES
    from soundclust_ray.embed.registry import EMBEDDERS

    assert sorted(EMBED_BACKEND_NAMES) == sorted(EMBEDDERS)


def test_config_family_names_are_the_registry():
    """The scipy-free list a run checks --features against is exactly the registry's."""
    from soundclust_ray.config import FEATURE_FAMILY_NAMES
    from soundclust_ray.features.registry import FAMILIES

    assert sorted(FEATURE_FAMILY_NAMES) == sorted(FAMILIES)


def test_unknown_embed_backend_is_one_line_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["run", GTZAN_MINI, "--out", str(out), "--embed", "musicnn,clapp"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'clapp'" in err[0] and "did you mean clap?" in err[0]
    assert not out.exists()


def command_help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"] if command else ["--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["run", "demo", "analyze"])
def test_help_has_option_groups(command, capsys):
    text = command_help(command, capsys)
    groups = ["input & output:", "analysis:"]
    if command != "analyze":
        groups += ["features:", "embeddings:", "cluster & performance:"]
    for group in groups:
        assert f"\n{group}\n" in text, group
    features, embeddings = text.find("\nfeatures:"), text.find("\nembeddings:")
    if command != "analyze":
        assert features < text.find("  --chunk-level", features) < embeddings
        assert embeddings < text.find("  --clap-model", embeddings) < text.find("\nanalysis:")


@pytest.mark.parametrize("command", ["", "run", "demo", "analyze", "similar", "export"])
def test_help_has_examples_and_words_for_defaults(command, capsys):
    import re

    text = command_help(command, capsys)
    assert "\nexamples:\n" in text and f"soundclust {command}".rstrip() in text
    for wrong in ("('", "()", "(default: None)", "(default: )", "seed 00"):
        assert wrong not in text, wrong
    assert not re.search(r"\(default: [^)]*[\[\]']", text)


def test_defaults_in_words(capsys):
    text = " ".join(command_help("run", capsys).split())
    for expected in (
        "(default: timbre)",
        "(default: musicnn)",
        "(default: none)",
        "(default: 600)",
        "(default: all)",
    ):
        assert expected in text, expected
    assert "(default: 4)" in " ".join(command_help("demo", capsys).split())  # demo's own k


@pytest.mark.parametrize("command", ["analyze", "similar", "export"])
def test_out_positional_or_option(command):
    extra = ["--format", "csv"] if command == "export" else []
    parser = build_parser()
    assert parser.parse_args([command, "o1", *extra]).out == "o1"
    assert parser.parse_args([command, "--out", "o2", *extra]).out == "o2"
    assert parser.parse_args([command, "o3", "--out", "o3", *extra]).out == "o3"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["analyze", "a", "--out", "b"], "OUT given twice: a and b"),
        (["analyze", "--k", "3"], "give the output folder OUT (as OUT or --out OUT)"),
        (["similar", "--id", "x"], "give the output folder OUT"),
        (["analyze", "o", "--k", "-2"], "k must be ≥ 2"),
        (["analyze", "--out", "o", "--pca", "abc"], "--pca takes a number of components"),
        (["run", "x", "--out", "o", "--limit", "many"], "invalid int value: 'many'"),
    ],
)
def test_out_and_value_mistakes_are_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and expected in err, err
    assert err.count("\n") == 1 and "usage:" not in err and "_pca_value" not in err


def test_options_given_are_the_typed_ones():
    args = build_parser().parse_args(["analyze", "o", "--k=5", "--min-cluster-size", "6"])
    assert {"k", "min_cluster_size"} <= args.options_given
    assert (
        "pca" not in args.options_given
        and "k" not in build_parser().parse_args(["analyze", "o"]).options_given
    )
