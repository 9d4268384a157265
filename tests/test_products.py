"""Each feature family is its own product: adding one computes only it, a changed setting is
refused before any work unless ``--recompute``, and an OUT of format 1 is upgraded or refused.

Real runs of the CLI on a local Ray (``ray_local``) over four 2 s clips, features only: the
product mechanics are the same for every product, and embedding would cost minutes of CI.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import tone

from soundclust_ray import outdir, outguard, shards
from soundclust_ray.analysis import gather
from soundclust_ray.cli import main
from soundclust_ray.config import RunConfig, from_dict
from soundclust_ray.upgrade import legacy_product_hash

pytestmark = pytest.mark.ray

TIMBRE, CLASSIC = outdir.feature_product("timbre"), outdir.feature_product("classic")
BASE = ["--embed", "none", "--no-analysis", "--quiet"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("product_clips")
    for i in range(4):
        sf.write(root / f"t{i}.wav", tone(200 + 150 * i, 3.0, 22050, noise=0.05, seed=i), 22050)
    return root


def run(clips: Path, out: Path, *args: str) -> int:
    return main(["run", str(clips), "--out", str(out), *BASE, *args])


def shard_state(out: Path, product: str) -> dict[str, tuple[int, str]]:
    """name → (mtime_ns, sha256) of every shard of ``product``: what 'untouched' means."""
    return {
        Path(p).name: (Path(p).stat().st_mtime_ns, hashlib.sha256(Path(p).read_bytes()).hexdigest())
        for p in shards.list_shards(str(out), product)
    }


def values(out: Path, product: str) -> pd.DataFrame:
    frames = [t.to_pandas() for t in shards.iter_shard_tables(str(out), product)]
    return pd.concat(frames).set_index("track_id").sort_index()


@pytest.fixture(scope="module")
def timbre_out(clips, tmp_path_factory, ray_local) -> Path:
    out = tmp_path_factory.mktemp("timbre_out") / "out"
    assert run(clips, out, "--features", "timbre") == 0
    return out


def copy_out(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=shutil.copy2)
    return dst


@pytest.fixture(scope="module")
def both_out(clips, timbre_out, tmp_path_factory) -> tuple[Path, dict]:
    """``timbre_out`` with classic added by a second run, and timbre's shards before it."""
    out = copy_out(timbre_out, tmp_path_factory.mktemp("both_out") / "out")
    before = shard_state(out, TIMBRE)
    assert before and not shards.list_shards(str(out), CLASSIC)
    assert run(clips, out, "--features", "timbre,classic") == 0
    return out, before


def test_adding_a_family_computes_only_that_family(both_out):
    out, before = both_out
    assert shard_state(out, TIMBRE) == before
    assert set(values(out, CLASSIC).index) == {f"t{i}.wav" for i in range(4)}
    info = json.loads((out / "run.json").read_text())["products"]
    assert (info[TIMBRE]["written"], info[TIMBRE]["skipped"]) == (0, 4)
    assert (info[CLASSIC]["written"], info[CLASSIC]["skipped"]) == (4, 0)
    g = gather.gather_features(str(out))
    families = {c.split("__", 1)[0] for c in g.columns}
    assert families == {"timbre", "classic"} and g.X.shape == (4, 180 + 33)


def test_a_new_model_and_a_new_track_compute_only_what_is_new(clips, timbre_out, tmp_path):
    """One pass: the old tracks are decoded for the model alone, the new one for both."""
    more = Path(shutil.copytree(clips, tmp_path / "clips"))
    sf.write(more / "t4.wav", tone(900.0, 3.0, 22050, noise=0.05, seed=4), 22050)
    out = copy_out(timbre_out, tmp_path / "out")
    before = shard_state(out, TIMBRE)
    assert run(more, out, "--features", "timbre", "--embed", "musicnn") == 0
    after = shard_state(out, TIMBRE)
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 1
    info = json.loads((out / "run.json").read_text())["products"]
    musicnn = outdir.embeddings_product("musicnn")
    assert (info[TIMBRE]["written"], info[TIMBRE]["skipped"]) == (1, 4)
    assert (info[musicnn]["written"], info[musicnn]["skipped"]) == (5, 0)
    assert set(values(out, musicnn).index) == {f"t{i}.wav" for i in range(5)}


def test_the_analysis_takes_the_families_the_run_asked_for(clips, both_out, tmp_path):
    out = copy_out(both_out[0], tmp_path / "out")
    assert run(clips, out, "--features", "timbre") == 0  # nothing to compute: no Ray work
    assert gather.feature_products(str(out)) == [TIMBRE]
    assert gather.gather_features(str(out)).X.shape == (4, 180)
    assert shards.list_shards(str(out), CLASSIC)  # kept for a run that asks for it again


def test_each_family_is_written_under_its_own_hash(both_out):
    out = both_out[0]
    hashes = json.loads((out / "run.json").read_text())["product_hashes"]
    for product in (TIMBRE, CLASSIC):
        assert shards.shard_config_hashes(str(out), product) == {hashes[product]}
        columns = pq.read_schema(shards.list_shards(str(out), product)[0]).names
        family = product.split("/")[1]
        assert columns[0] == "track_id" and all(c.startswith(f"{family}__") for c in columns[1:])
    assert hashes[TIMBRE] != hashes[CLASSIC]


def test_a_changed_setting_is_one_line_naming_product_and_setting_before_any_work(
    clips, timbre_out, tmp_path, capsys, monkeypatch
):
    out = copy_out(timbre_out, tmp_path / "out")
    listing = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    def no_ray(**_kwargs):
        raise AssertionError("Ray was started for a run that must be refused")

    monkeypatch.setattr("soundclust_ray.run.init_ray", no_ray)
    capsys.readouterr()
    assert run(clips, out, "--features", "timbre", "--max-duration", "1.5") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert TIMBRE in err[0] and "audio.max_duration_s 600.0 → 1.5" in err[0]
    assert f"--recompute {TIMBRE}" in err[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == listing
    # another family's setting is not timbre's: nothing to compute, nothing refused
    assert run(clips, out, "--features", "timbre", "--padding-threshold", "0.3") == 0
    assert run(clips, out, "--recompute", "rhythm") == 2
    assert "--recompute rhythm: not a product of this run" in capsys.readouterr().err


def test_recompute_replaces_that_product_alone_once_its_new_shards_are_written(
    clips, both_out, tmp_path
):
    out = copy_out(both_out[0], tmp_path / "out")
    timbre = shard_state(out, TIMBRE)
    old_hash = shards.shard_config_hashes(str(out), CLASSIC)
    old_names = set(shard_state(out, CLASSIC))
    args = ["--features", "timbre,classic", "--padding-threshold", "0.55"]
    assert run(clips, out, *args) == 2
    assert run(clips, out, *args, "--recompute", "classic") == 0
    assert shard_state(out, TIMBRE) == timbre
    assert set(shard_state(out, CLASSIC)).isdisjoint(old_names)
    new_hash = json.loads((out / "run.json").read_text())["product_hashes"][CLASSIC]
    assert shards.shard_config_hashes(str(out), CLASSIC) == {new_hash} != old_hash
    assert sorted(values(out, CLASSIC).index) == [f"t{i}.wav" for i in range(4)]
    assert not (out / outdir.RECOMPUTE).exists()
    assert run(clips, out, *args) == 0  # the new settings are OUT's now


def to_format_1(out: Path) -> dict:
    """Rewrite a format 2 OUT of timbre + classic as the old main wrote it: one
    ``features/part-*`` product with every family's columns under the old hash, run.json's
    ``features`` entries, a format 1 marker. Returns the merged feature table's values."""
    info = json.loads((out / "run.json").read_text())
    cfg = from_dict(RunConfig, info["config"])
    merged = values(out, TIMBRE).join(values(out, CLASSIC))
    table = pa.Table.from_pandas(merged.reset_index(), preserve_index=False)
    legacy = legacy_product_hash(cfg, outdir.FEATURES)
    fs, base = outdir.resolve(str(out))
    outdir.write_table_atomic(fs, shards.new_shard_path(base, outdir.FEATURES), table, legacy)
    shutil.rmtree(out / "features" / "timbre")
    shutil.rmtree(out / "features" / "classic")
    entry = info["products"].pop(TIMBRE)
    info["products"].pop(CLASSIC)
    info["products"][outdir.FEATURES] = entry
    info["product_hashes"] = {outdir.FEATURES: legacy}
    info.pop("product_settings")
    (out / "run.json").write_text(json.dumps(info))
    marker = json.loads((out / outguard.MARKER).read_text())
    (out / outguard.MARKER).write_text(json.dumps({**marker, "format": 1}))
    return merged


def test_a_format_1_out_is_upgraded_in_place_and_resumes_without_recomputing(
    clips, both_out, tmp_path, capsys
):
    out = copy_out(both_out[0], tmp_path / "out")
    hashes = json.loads((out / "run.json").read_text())["product_hashes"]
    merged = to_format_1(out)
    capsys.readouterr()
    assert (
        main(["run", str(clips), "--out", str(out), *BASE[:-1], "--features", "timbre,classic"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert sum("upgraded" in line for line in lines) == 1
    assert any("nothing left to compute" in line for line in lines), lines
    assert not shards.list_shards(str(out), outdir.FEATURES)
    for product in (TIMBRE, CLASSIC):
        assert shards.shard_config_hashes(str(out), product) == {hashes[product]}
    pd.testing.assert_frame_equal(values(out, TIMBRE).join(values(out, CLASSIC)), merged)
    assert json.loads((out / outguard.MARKER).read_text())["format"] == outguard.MARKER_FORMAT


def test_a_format_1_out_whose_run_json_does_not_reproduce_its_hash_is_refused(
    clips, both_out, tmp_path, capsys
):
    out = copy_out(both_out[0], tmp_path / "out")
    to_format_1(out)
    info = json.loads((out / "run.json").read_text())
    info["config"]["features"]["timbre"]["n_mels"] = 32  # not what made the shards
    (out / "run.json").write_text(json.dumps(info))
    listing = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    capsys.readouterr()
    assert run(clips, out, "--features", "timbre,classic") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not reproduce the settings of its features shards" in err[0]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == listing


OLD_OUT = Path(__file__).parent / "data" / "old_out"


def test_the_old_main_hash_is_reproduced_and_a_real_old_out_upgrades(tmp_path):
    """The committed OUT of an older soundclust (no marker): its recorded hash is the old
    formula's, so it is upgraded, its rows unchanged."""
    from soundclust_ray.run import guard_out
    from soundclust_ray.sources.base import RunOptions

    assert legacy_product_hash(RunConfig(), outdir.FEATURES) == "a6baa504a7234618"
    out = copy_out(OLD_OUT, tmp_path / "old_out")
    before = values(out, outdir.FEATURES)
    said = []
    guard_out(RunOptions(input_path=str(tmp_path / "clips"), out=str(out)), said.append)
    assert len(said) == 1 and "features → features/timbre" in said[0]
    pd.testing.assert_frame_equal(values(out, TIMBRE), before)
    assert json.loads((out / "run.json").read_text())["products"][TIMBRE]["written"] == 3


def test_dry_run_plans_a_recompute_as_every_track_of_that_product_only(
    clips, both_out, tmp_path, capsys
):
    out = copy_out(both_out[0], tmp_path / "out")
    capsys.readouterr()
    args = ["--features", "timbre,classic", "--padding-threshold", "0.55", "--dry-run"]
    assert run(clips, out, *args, "--recompute", "classic") == 0
    text = capsys.readouterr().out
    assert re.search(rf"{TIMBRE}\s+would compute\s+0, resumed\s+4", text), text
    assert re.search(rf"{CLASSIC}\s+would compute\s+4, resumed\s+0", text), text
