"""`analyze OUT` keeps what the last analysis of OUT used unless an option is typed again."""

from __future__ import annotations

import json

from test_analysis_driver import make_out

from soundclust_ray.cli import main
from soundclust_ray.config import AnalysisConfig


def metrics(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_a_reanalysis_keeps_the_label_column_and_typed_options_win(tmp_path, capsys):
    make_out(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"products": {}, "n_failed": 0}))
    first = ["analyze", str(tmp_path), "--label-col", "genre", "--k", "3", "--no-umap"]
    assert main([*first, "--min-samples", "3"]) == 0
    assert metrics(tmp_path)["nmi"] is not None
    capsys.readouterr()

    assert main(["analyze", str(tmp_path), "--k", "auto"]) == 0
    again = metrics(tmp_path)
    assert again["label_col"] == "genre" and again["nmi"] is not None
    assert again["config"]["hdbscan_min_samples"] == 3 and again["config"]["umap"] is False
    assert again["config"]["k"] == "auto" and "k_selection" in again
    text = capsys.readouterr().out
    assert "as in the last analysis" in text and "label_col genre" in text
    assert "(chosen by silhouette: --k auto)" in text

    assert main(["analyze", str(tmp_path), "--min-samples", "2"]) == 0
    assert metrics(tmp_path)["config"]["hdbscan_min_samples"] == 2
    assert metrics(tmp_path)["config"]["k"] == "auto"  # remembered from the analysis before


def test_an_out_without_a_record_uses_the_cli_defaults(tmp_path):
    make_out(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"products": {}, "n_failed": 0}))
    assert main(["analyze", str(tmp_path), "--no-umap", "--quiet"]) == 0
    assert metrics(tmp_path)["label_col"] is None
    assert metrics(tmp_path)["config"]["k"] == AnalysisConfig().k
