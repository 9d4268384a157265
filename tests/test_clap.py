"""CLAP embedder: windowing, loading errors, and vectors equal to transformers' own path.

The model is a genuinely tiny ``ClapModel`` (random weights, ~7k parameters) saved with
safetensors to a temp dir, so every test runs the real loading and inference code on CPU.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GTZAN
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

from soundclust_ray.audio import load_audio
from soundclust_ray.config import ClapEmbedConfig, EmbedConfig
from soundclust_ray.embed.base import AudioEmbedder, EmbedderLoadError, Preparer
from soundclust_ray.embed.clap import ClapWindowing, pad_window, window_starts
from soundclust_ray.embed.registry import load_embedder, load_preparer

SR = 48000
INPUT = 10 * SR


def build_tiny_clap(folder: Path, truncation: str = "rand_trunc", seed: int = 0) -> Path:
    """Save a tiny random-weight CLAP (LAION-style extractor: 50 Hz–14 kHz, repeatpad) to folder.

    ``truncation="fusion"`` builds a fused checkpoint (like laion/clap-htsat-fused).
    """
    audio = {
        "depths": [1, 1],
        "num_attention_heads": [1, 1],
        "patch_embeds_hidden_size": 8,
        "hidden_size": 16,
        "window_size": 8,
        "spec_size": 256,
        "num_mel_bins": 64,
        "mlp_ratio": 2.0,
        "projection_dim": 16,
        "enable_fusion": truncation == "fusion",
    }
    text = {
        "vocab_size": 64,
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 1,
        "intermediate_size": 8,
        "max_position_embeddings": 16,
        "projection_dim": 16,
    }
    torch.manual_seed(seed)
    model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=16)).eval()
    model.save_pretrained(folder, safe_serialization=True)
    extractor = ClapFeatureExtractor(frequency_min=50, truncation=truncation, padding="repeatpad")
    extractor.save_pretrained(folder)
    return folder


def clap_cfg(model_dir: Path, **kw) -> EmbedConfig:
    return EmbedConfig(clap=replace(ClapEmbedConfig(model=str(model_dir)), **kw))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_clap(tmp_path_factory.mktemp("tiny_clap"))


@pytest.fixture(scope="module")
def embedder(tiny_dir):
    return load_embedder("clap", clap_cfg(tiny_dir), "cpu")


@pytest.fixture(scope="module")
def gtzan_windows(embedder) -> np.ndarray:
    """Real music: two GTZAN clips at 48 kHz → 6 windows (3 whole 10 s windows each)."""
    tracks = [load_audio(GTZAN / n, SR) for n in ("blues.00000.wav", "classical.00000.wav")]
    return np.concatenate([embedder.prepare(y) for y in tracks])


def reference_vectors(model_dir: Path, windows: np.ndarray) -> np.ndarray:
    """What transformers gives for the same windows: extractor + ``get_audio_features``."""
    model = ClapModel.from_pretrained(model_dir, use_safetensors=True).eval()
    extractor = ClapFeatureExtractor.from_pretrained(model_dir)
    inputs = extractor(list(windows), sampling_rate=SR, return_tensors="pt")
    with torch.inference_mode():
        return model.get_audio_features(**inputs).pooler_output.numpy()


class TestWindowing:
    @pytest.mark.parametrize(
        ("n", "expected"),
        [
            (1, [(0, 1)]),
            (999, [(0, 999)]),
            (1000, [(0, 1000)]),
            (1400, [(0, 1000)]),
            (1500, [(0, 1000), (1000, 1500)]),
            (3000, [(0, 1000), (1000, 2000), (2000, 3000)]),
        ],
    )
    def test_spans(self, n, expected):
        assert window_starts(n, 1000, max_windows=30, min_last_window=0.5) == expected

    def test_cap_keeps_evenly_spaced_windows(self):
        spans = window_starts(100_000, 1000, max_windows=5, min_last_window=0.5)
        assert [s for s, _ in spans] == [0, 25000, 50000, 74000, 99000]

    @pytest.mark.parametrize("mode", ["repeatpad", "repeat", "pad"])
    @pytest.mark.parametrize("n", [1, 7000, 250_000, INPUT])
    def test_padding_matches_extractor(self, mode, n):
        """Short clips: our padding + front end gives the extractor's features on the raw clip."""
        from soundclust_ray.embed.clap import ClapLogMel

        y = np.random.default_rng(n).standard_normal(n).astype(np.float32)
        fe = ClapFeatureExtractor(frequency_min=50, truncation="rand_trunc", padding=mode)
        ref = fe(y, sampling_rate=SR, return_tensors="np")["input_features"]
        padded = pad_window(y, INPUT, mode)
        assert padded.shape == (INPUT,)
        got = ClapLogMel(fe)(torch.from_numpy(padded[None])).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-3)

    def test_prepare_shapes(self, tiny_dir):
        prep = load_preparer("clap", clap_cfg(tiny_dir, max_windows=2))
        assert isinstance(prep, ClapWindowing) and isinstance(prep, Preparer)
        assert prep.prepare(np.ones(SR, np.float32)).shape == (1, INPUT)
        assert prep.prepare(np.ones(35 * SR, np.float32)).shape == (2, INPUT)

    def test_short_window_is_repeat_padded(self, tiny_dir):
        prep = load_preparer("clap", clap_cfg(tiny_dir, window_s=4.0))
        y = np.arange(9 * SR, dtype=np.float32)
        out = prep.prepare(y)
        assert out.shape == (2, INPUT)
        np.testing.assert_array_equal(out[0, : 4 * SR], out[0, 4 * SR : 8 * SR])
        assert (out[0, 8 * SR :] == 0).all()

    def test_window_longer_than_model_input_is_refused(self, tiny_dir):
        with pytest.raises(EmbedderLoadError, match="at most the model's input"):
            load_preparer("clap", clap_cfg(tiny_dir, window_s=12.0))


class TestFrontEnd:
    """The torch log-mel equals ``ClapFeatureExtractor``'s numpy output within 1e-3 dB.

    Both compute in float64; the extractor stores the complex STFT as complex64, hence not
    bit-exact. Real music with silence and a near-empty 12–14 kHz band (GTZAN is 22 kHz audio)
    is the hard case: a float32 STFT drifts by up to ~2 dB in those bins.
    """

    @pytest.mark.parametrize("truncation", ["rand_trunc", "fusion"])
    def test_matches_extractor_on_real_music_and_silence(self, gtzan_windows, truncation):
        from soundclust_ray.embed.clap import ClapLogMel

        windows = np.concatenate([gtzan_windows[:3], np.zeros((1, INPUT), np.float32)])
        windows[3, : SR // 2] = gtzan_windows[0, : SR // 2]
        fe = ClapFeatureExtractor(frequency_min=50, truncation=truncation, padding="repeatpad")
        ref = np.stack(fe(list(windows), sampling_rate=SR, return_tensors="np")["input_features"])
        got = ClapLogMel(fe)(torch.from_numpy(windows)).numpy()
        assert got.shape == ref.shape == (4, 4 if truncation == "fusion" else 1, 1001, 64)
        assert ref.min() == pytest.approx(-100.0)
        np.testing.assert_allclose(got, ref, atol=1e-3)


class TestEmbedder:
    def test_contract(self, embedder):
        assert isinstance(embedder, AudioEmbedder)
        assert (embedder.name, embedder.sample_rate, embedder.dim, embedder.tag_names) == (
            "clap",
            SR,
            16,
            (),
        )

    def test_equals_transformers_get_audio_features(self, embedder, tiny_dir, gtzan_windows):
        (out,) = embedder.embed_tracks([gtzan_windows])
        assert out.embeddings.dtype == np.float32 and out.tags is None
        ref = reference_vectors(tiny_dir, gtzan_windows)
        np.testing.assert_allclose(out.embeddings, ref, atol=1e-5)
        assert np.abs(out.embeddings - out.embeddings[0]).max() > 1e-3

    def test_batch_size_does_not_change_vectors(self, tiny_dir, gtzan_windows):
        tracks = [gtzan_windows[:3], gtzan_windows[3:4], gtzan_windows[4:]]
        results = {}
        for bs in (1, 8):
            emb = load_embedder("clap", clap_cfg(tiny_dir, batch_size=bs), "cpu")
            results[bs] = emb.embed_tracks(tracks)
        for a, b in zip(results[1], results[8], strict=True):
            np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5)
        assert [r.embeddings.shape[0] for r in results[8]] == [3, 1, 2]

    def test_same_track_same_vector_in_any_company(self, embedder, gtzan_windows):
        alone = embedder.embed_tracks([gtzan_windows[3:]])[0].embeddings
        mixed = embedder.embed_tracks([gtzan_windows[:2], gtzan_windows[3:]])[1].embeddings
        np.testing.assert_allclose(alone, mixed, atol=1e-5)

    def test_empty_input(self, embedder):
        assert embedder.embed_tracks([]) == []

    @pytest.mark.gpu
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_cuda_fp32_matches_cpu_and_fp16_is_close(self, embedder, tiny_dir, gtzan_windows):
        cpu = embedder.embed_tracks([gtzan_windows])[0].embeddings
        fp32 = load_embedder("clap", clap_cfg(tiny_dir, fp16=False), "cuda")
        np.testing.assert_allclose(fp32.embed_tracks([gtzan_windows])[0].embeddings, cpu, atol=1e-3)
        fp16 = load_embedder("clap", clap_cfg(tiny_dir, fp16=True), "cuda")
        half = fp16.embed_tracks([gtzan_windows])[0].embeddings
        assert (np.sum(half * cpu, axis=1) > 0.99).all()

    def test_fusion_checkpoint_is_deterministic(self, tmp_path, gtzan_windows):
        """A fusion extractor would flag a random clip as 'longer'; we never do."""
        folder = build_tiny_clap(tmp_path, truncation="fusion")
        emb = load_embedder("clap", clap_cfg(folder), "cpu")
        a = emb.embed_tracks([gtzan_windows[:2]])[0].embeddings
        b = emb.embed_tracks([gtzan_windows[1:2]])[0].embeddings
        np.testing.assert_allclose(a[1:], b, atol=1e-5)


class TestLoadErrors:
    def test_missing_directory(self, tmp_path):
        with pytest.raises(EmbedderLoadError, match=r"does not exist.*--clap-model DIR"):
            load_embedder("clap", clap_cfg(tmp_path / "nope"), "cpu")

    def test_directory_without_weights(self, tmp_path):
        ClapFeatureExtractor().save_pretrained(tmp_path)
        with pytest.raises(EmbedderLoadError) as info:
            load_embedder("clap", clap_cfg(tmp_path), "cpu")
        message = str(info.value)
        assert "local directory" in message and "--clap-model DIR" in message
        assert "\n" not in message

    def test_hub_id_offline(self, monkeypatch):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        cfg = EmbedConfig(clap=ClapEmbedConfig(model="laion/no-such-clap-model-here"))
        with pytest.raises(
            EmbedderLoadError, match=r"hub id 'laion/no-such.*offline.*--clap-model"
        ):
            load_embedder("clap", cfg, "cpu")

    def test_sample_rate_mismatch(self, tiny_dir):
        with pytest.raises(EmbedderLoadError, match="expects 48000 Hz"):
            load_embedder("clap", clap_cfg(tiny_dir, sample_rate=44100), "cpu")

    def test_unknown_backend(self, tiny_dir):
        with pytest.raises(ValueError, match="unknown embedding backend 'nope'"):
            load_embedder("nope", clap_cfg(tiny_dir))
