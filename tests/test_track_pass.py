"""A run's one pass (stages/track.py, stages/passes.py) called directly, without Ray.

The pass must compute, for every product, exactly what that product's own stage computes
(same rows, same values, same error rows), decode each track once whatever it feeds, and give
the same rows whether a model runs in the CPU actors or in actors of its own.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from soundclust_ray.audio import decode, load_audio, load_audio_rates
from soundclust_ray.config import FeaturesConfig, RunConfig
from soundclust_ray.stages.base import ERROR_FIELDS, TODO_FIELD, family_batch, family_field
from soundclust_ray.stages.embed import (
    EmbedPrepareStage,
    EmbedStage,
    PassEmbedStage,
    prepare_stage_name,
)
from soundclust_ray.stages.features import ClassicChunkStage, FeatureStage
from soundclust_ray.stages.passes import PRODUCTS_FIELD, nest, unnest
from soundclust_ray.stages.track import TrackStage

SR = 22050
KEYS = ("timbre", "classic", "features_chunks", "musicnn")
KEYS_JOINED = ",".join(KEYS)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("pass_clips")
    sf.write(root / "low.wav", tone(220.0, 9.0, SR, noise=0.05, seed=1), SR)
    sf.write(root / "high.flac", tone(1760.0, 5.0, 44100, noise=0.05, seed=2), 44100)
    (root / "text.wav").write_text("this is not audio\n")
    return root


@pytest.fixture(scope="module")
def cfg():
    base = RunConfig()
    features = FeaturesConfig(families=("timbre", "classic"), chunk_level=True)
    return replace(base, features=features, embed=replace(base.embed, backends=("musicnn",)))


def pass_batch(clips, products: list[str]) -> dict[str, np.ndarray]:
    names = ("low.wav", "high.flac", "text.wav")
    return {
        "track_id": np.asarray(names, dtype=object),
        "path": np.asarray([str(clips / n) for n in names], dtype=object),
        PRODUCTS_FIELD: np.asarray(products, dtype=object),
    }


def assert_same_batch(got: dict, want: dict) -> None:
    """Same columns and values; the pass also gives a product without one (the classic
    chunks) its ``path`` column, which its error rows then carry."""
    if "path" not in want:
        got = {k: v for k, v in got.items() if k != "path"}
    assert set(got) == set(want)
    for name, values in want.items():
        values, other = np.asarray(values), np.asarray(got[name])
        if values.dtype.kind == "f":
            np.testing.assert_array_equal(other, values, err_msg=name)
        else:
            assert other.tolist() == values.tolist(), name


def test_one_decode_resampled_to_each_rate_is_bit_identical(clips):
    path = clips / "high.flac"
    signals = load_audio_rates(path, (22050, 16000, 22050, 48000))
    assert list(signals) == [22050, 16000, 48000]
    for rate, y in signals.items():
        np.testing.assert_array_equal(y, load_audio(path, rate))


def test_nest_then_unnest_gives_back_the_product_batch():
    rows = {
        "track_id": np.asarray(["a", "a", "a", "c"], dtype=object),
        "path": np.asarray(["/a", "/a", "/a", "/c"], dtype=object),
        "chunk_index": np.asarray([0, 1, 2, -1]),
        "x": np.asarray([0.5, 1.5, 2.5, np.nan], dtype=np.float32),
        "error_stage": np.asarray(["", "", "", "s"], dtype=object),
        "error_type": np.asarray(["", "", "", "E"], dtype=object),
        "error_message": np.asarray(["", "", "", "bad"], dtype=object),
        "node_id": np.asarray(["n"] * 4, dtype=object),
    }
    todo = np.array([True, False, True])
    batch = {
        "track_id": np.asarray(["a", "b", "c"], dtype=object),
        "path": np.asarray(["/a", "/b", "/c"], dtype=object),
        "node_id": np.asarray(["n"] * 3, dtype=object),
        **nest("k", 3, todo, rows),
    }
    assert [len(v) for v in batch["k@x"]] == [3, 0, 1]
    assert batch["k@error_type"].tolist() == ["", "", "E"]
    assert_same_batch(unnest(batch, "k"), rows)


def test_nest_refuses_rows_of_other_tracks():
    rows = {"track_id": np.asarray(["a"], dtype=object), "v": np.zeros(1)}
    rows.update({f: np.asarray([""], dtype=object) for f in ERROR_FIELDS})
    with pytest.raises(ValueError, match="1 tracks of rows for 2 tracks"):
        nest("k", 2, np.array([True, True]), rows)


def test_each_product_as_its_own_stage_computes_it(clips, cfg):
    """Timbre and classic pending for some tracks only, chunks and musicnn for all, a text
    file named .wav failing in every product it was pending for."""
    pending = ["timbre,features_chunks,musicnn", KEYS_JOINED, "timbre,classic,musicnn"]
    batch = pass_batch(clips, pending)
    out = TrackStage(cfg, KEYS, models=("musicnn",))(batch)
    tracks = {k: batch[k] for k in ("track_id", "path")}

    families = FeatureStage(cfg, ("timbre", "classic"))
    own = families(
        {
            **tracks,
            "families": np.asarray(["timbre", "timbre,classic", "timbre,classic"], dtype=object),
        }
    )
    for family in ("timbre", "classic"):
        assert_same_batch(family_batch(out, family), family_batch(own, family))
    todo = [True, True, False]
    rows = {k: v[todo] for k, v in tracks.items()}
    assert_same_batch(unnest(out, "features_chunks"), ClassicChunkStage(cfg)(rows))
    embedded = EmbedStage(cfg, "musicnn")(EmbedPrepareStage(cfg, "musicnn")(tracks))
    assert_same_batch(unnest(out, "musicnn"), embedded)
    assert out[family_field("classic", TODO_FIELD)].tolist() == [False, True, True]
    assert out[family_field("musicnn", "error_stage")][2] == prepare_stage_name("musicnn")


def test_model_in_its_own_actor_gives_the_same_rows(clips, cfg):
    batch = pass_batch(clips, [KEYS_JOINED] * 3)
    fused = TrackStage(cfg, KEYS, models=("musicnn",))(dict(batch))
    prepared = TrackStage(cfg, KEYS, models=())(dict(batch))
    assert "musicnn@prepared" in prepared
    separate = PassEmbedStage(cfg, "musicnn")(prepared)
    assert "musicnn@prepared" not in separate
    for key in ("features_chunks", "musicnn"):
        assert_same_batch(unnest(separate, key), unnest(fused, key))


def test_a_track_is_decoded_once_for_all_its_products(clips, cfg, monkeypatch):
    calls = []
    read = decode.read_audio

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return read(path, *args, **kwargs)

    monkeypatch.setattr(decode, "read_audio", counting)
    batch = pass_batch(clips, [KEYS_JOINED, "timbre", ""])
    out = TrackStage(cfg, KEYS, models=("musicnn",))(batch)
    assert sorted(calls) == sorted(str(clips / n) for n in ("low.wav", "high.flac"))
    assert out[family_field("musicnn", TODO_FIELD)].tolist() == [True, False, False]
    assert not out[family_field("timbre", TODO_FIELD)][2]


def test_a_features_only_pass_never_imports_torch():
    """torch doubles a features-only actor's memory (stages/track.py's docstring)."""
    code = (
        "import sys\n"
        "from soundclust_ray.config import RunConfig\n"
        "from soundclust_ray.stages.track import TrackStage\n"
        "TrackStage(RunConfig(), ('timbre', 'features_chunks'))\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_track_is_resampled_only_to_the_rates_of_its_pending_families(clips, monkeypatch):
    rates = []
    resample = decode.resample

    def recording(y, sr, rate):
        rates.append(rate)
        return resample(y, sr, rate)

    monkeypatch.setattr(decode, "resample", recording)
    stage = FeatureStage(RunConfig(), ("timbre", "soundspace"))
    batch = {
        "track_id": np.asarray(["low.wav"], dtype=object),
        "path": np.asarray([str(clips / "low.wav")], dtype=object),
        "families": np.asarray(["timbre"], dtype=object),
    }
    out = stage(batch)
    assert rates == [RunConfig().features.timbre.sample_rate]
    assert out[family_field("timbre", TODO_FIELD)].tolist() == [True]
    assert out[family_field("soundspace", TODO_FIELD)].tolist() == [False]
