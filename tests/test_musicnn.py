"""The musicnn port: faithful to the original TF graph, front end equal to librosa, contract.

``tests/data/musicnn_golden.npz`` holds outputs of the ORIGINAL TensorFlow graph (made once by
``scripts/musicnn_golden.py`` in a throwaway TF venv) for the first 10 s (3 patches) of two
GTZAN clips, with both shipped models.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch

from soundclust_ray.audio import load_audio
from soundclust_ray.config import EmbedConfig, MusicnnConfig
from soundclust_ray.embed.base import AudioEmbedder, EmbedderLoadError, Preparer
from soundclust_ray.embed.musicnn import (
    MODEL_NAMES,
    MUSICNN_LAYERS,
    MUSICNN_MODELS,
    VGG_LAYERS,
    GemmMusicnn,
    LogMelFrontEnd,
    MusicnnEmbedder,
    MusicnnPreparer,
    extract_layers,
    length_groups,
    load_musicnn,
    load_musicnn_preparer,
    sanitize_tag,
)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "musicnn_golden.npz"
GTZAN = ROOT.parent / "shared" / "data" / "gtzan_mini"
CFG = MusicnnConfig()
DEFAULT_LAYER = {m: "pool5" if m.endswith("vgg") else "penultimate" for m in MODEL_NAMES}

needs_gtzan = pytest.mark.skipif(not GTZAN.is_dir(), reason="../shared/data/gtzan_mini missing")


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def embedders() -> dict[str, MusicnnEmbedder]:
    return {m: MusicnnEmbedder(replace(CFG, model=m), "cpu") for m in MODEL_NAMES}


@pytest.fixture(scope="module")
def clips(golden: dict[str, np.ndarray]) -> list[np.ndarray]:
    seconds = float(golden["seconds"])
    return [load_audio(GTZAN / str(c), CFG.sample_rate, seconds) for c in golden["clips"]]


def reference_logmel(y: np.ndarray) -> np.ndarray:
    """musicnn's own input pipeline (librosa power mel, float16 round trip, float32 log)."""
    mel = librosa.feature.melspectrogram(
        y=y, sr=CFG.sample_rate, n_fft=CFG.n_fft, hop_length=CFG.hop_length, n_mels=CFG.n_mels
    ).T
    return np.log10(10000 * mel.astype(np.float16).astype(np.float32) + 1)


def reference_patches(y: np.ndarray) -> np.ndarray:
    logmel = reference_logmel(y)
    n = logmel.shape[0] // CFG.patch_frames
    return logmel[: n * CFG.patch_frames].reshape(n, CFG.patch_frames, CFG.n_mels)


@needs_gtzan
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_model_reproduces_tensorflow_graph(
    model: str, golden: dict, embedders: dict, clips: list[np.ndarray]
) -> None:
    """Same input as the TF reference → tags within 1e-5, penultimate within 1e-4."""
    for i, y in enumerate(clips):
        patches = reference_patches(y)
        np.testing.assert_allclose(
            patches.astype(np.float64).sum(axis=(1, 2)), golden[f"logmel_sum_{i}"], rtol=1e-6
        )
        with torch.inference_mode():
            pen, tags = embedders[model].model(torch.from_numpy(patches))
        np.testing.assert_allclose(tags.numpy(), golden[f"{model}_tags_{i}"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(
            pen.numpy(), golden[f"{model}_{DEFAULT_LAYER[model]}_{i}"], rtol=0, atol=1e-4
        )


@needs_gtzan
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_layer_reproduces_tensorflow(model: str, golden: dict, clips: list) -> None:
    """Each layer of ONE forward pass vs the TF graph: tags 2e-5, pooled 753-d 2e-3
    (values up to ~137), the rest 1e-4; extract_layers pools them as numpy does."""
    layers = MUSICNN_LAYERS if model in MUSICNN_MODELS else VGG_LAYERS
    for i, y in enumerate(clips):
        out = extract_layers(y, CFG.sample_rate, model, layers, ["mean", "max", "mean_std"])
        ref_tags = golden[f"{model}_tags_{i}"].mean(axis=0)
        np.testing.assert_allclose(out["tags.mean"], ref_tags, rtol=0, atol=2e-5)
        for layer in layers:
            ref = golden[f"{model}_{layer}_{i}"]
            atol = 2e-3 if layer.endswith("_pool") else 1e-4
            for how, want in (("mean", ref.mean(0)), ("max", ref.max(0))):
                np.testing.assert_allclose(out[f"{layer}.{how}"], want, rtol=0, atol=atol)
            std = out[f"{layer}.mean_std"][ref.shape[1] :]
            np.testing.assert_allclose(std, ref.std(0), rtol=0, atol=atol)


@pytest.mark.parametrize("model", MUSICNN_MODELS)
def test_cpu_gemm_path_computes_the_module_layers(model: str, embedders: dict) -> None:
    """What embed_tracks runs on CPU (GemmMusicnn) equals the module's forward on every layer
    to float32 rounding (2e-6 of the layer's largest value): full and short patches, chunks
    of 1024 windows and odd small ones, one torch thread and patches spread over two."""
    emb = embedders[model]
    assert isinstance(emb.layers.__self__, GemmMusicnn)
    odd_chunks = GemmMusicnn(emb.model, rows=100)
    rng = np.random.default_rng(5)
    threads = torch.get_num_threads()
    for frames, n_threads in ((CFG.patch_frames, 1), (60, 1), (CFG.patch_frames, 2)):
        x = torch.from_numpy(3 * rng.random((3, frames, CFG.n_mels), dtype=np.float32))
        torch.set_num_threads(n_threads)
        try:
            with torch.inference_mode():
                want = emb.model.layers(x)
                outputs = [emb.layers(x), odd_chunks.layers(x)]
            assert torch.get_num_threads() == n_threads
        finally:
            torch.set_num_threads(threads)
        for got in outputs:
            assert set(got) == set(want)
            for k in want:
                scale = float(want[k].abs().max())
                torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=2e-6 * scale)
    vgg = MusicnnEmbedder(replace(CFG, model="MSD_vgg"), "cpu")
    assert vgg.layers == vgg.model.layers


def test_overlapping_patches_and_layer_choice() -> None:
    """patch_hop 17 (187 = 11 · 17) adds in-between patches; the layer picks vector and dim."""
    y = 0.1 * np.random.default_rng(3).standard_normal(16000 * 8).astype(np.float32)
    base = MusicnnEmbedder(CFG, "cpu")
    half = MusicnnEmbedder(replace(CFG, patch_hop=17, layer="max_pool", pool="mean_std"), "cpu")
    a, b = base.embed_tracks([base.prepare(y)])[0], half.embed_tracks([half.prepare(y)])[0]
    assert a.embeddings.shape == (2, 200) and b.embeddings.shape == (19, 753)
    assert half.dim == 2 * 753
    np.testing.assert_allclose(b.tags[[0, 11]], a.tags, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="no layer"):
        MusicnnEmbedder(replace(CFG, model="MSD_vgg", layer="penultimate"), "cpu")


@needs_gtzan
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_embedder_end_to_end_reproduces_tensorflow(
    model: str, golden: dict, embedders: dict, clips: list[np.ndarray]
) -> None:
    """Decoded audio → torch front end → model, both clips in one batch.

    Tags get 2e-5: the torch STFT differs from librosa's by float32 rounding, which flips a
    few float16 roundings of the mel input by one step (≈ 2e-4 in log units).
    """
    emb = embedders[model]
    outputs = emb.embed_tracks([emb.prepare(y) for y in clips])
    for i, out in enumerate(outputs):
        assert out.embeddings.dtype == np.float32 and out.tags is not None
        np.testing.assert_allclose(out.tags, golden[f"{model}_tags_{i}"], rtol=0, atol=2e-5)
        np.testing.assert_allclose(
            out.embeddings, golden[f"{model}_{DEFAULT_LAYER[model]}_{i}"], rtol=0, atol=1e-4
        )


@needs_gtzan
def test_tags_make_sense(embedders: dict, clips: list[np.ndarray], golden: dict) -> None:
    emb = embedders["MTT_musicnn"]
    assert str(golden["clips"][0]).startswith("classical")
    out = emb.embed_tracks([emb.prepare(clips[0])])[0]
    top = [emb.tag_names[j] for j in np.argsort(-out.tags.mean(axis=0))[:3]]
    assert "classical" in top


@pytest.mark.parametrize("n_samples", [512, 4000, 16000 * 3 + 77, 47616])
def test_front_end_matches_librosa(n_samples: int) -> None:
    rng = np.random.default_rng(n_samples)
    t = np.arange(n_samples) / CFG.sample_rate
    y = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n_samples)).astype(
        np.float32
    )
    front = LogMelFrontEnd(CFG.sample_rate, CFG.n_fft, CFG.hop_length, CFG.n_mels)
    with torch.inference_mode():
        power = front.power_mel(torch.from_numpy(y)[None])[0].numpy()
        logmel = front(torch.from_numpy(y)[None])[0].numpy()
    expected = librosa.feature.melspectrogram(
        y=y, sr=CFG.sample_rate, n_fft=CFG.n_fft, hop_length=CFG.hop_length, n_mels=CFG.n_mels
    ).T
    assert power.shape == expected.shape == (front.n_frames(n_samples), CFG.n_mels)
    np.testing.assert_allclose(power, expected, rtol=1e-4, atol=1e-5 * expected.max())
    # One float16 step of the mel input is at most ≈ 4.3e-4 after log10(10000·x + 1).
    np.testing.assert_allclose(logmel, reference_logmel(y), rtol=0, atol=5e-4)
    # Float16 steps are rare: most values agree to float32 rounding of the log.
    assert np.mean(np.abs(logmel - reference_logmel(y)) > 1e-5) < 0.05


def test_front_end_batch_equals_single() -> None:
    """Zero right-padding in a batch leaves every track's frames unchanged."""
    rng = np.random.default_rng(1)
    ys = [rng.standard_normal(n).astype(np.float32) for n in (50000, 61234, 48000)]
    front = LogMelFrontEnd(CFG.sample_rate, CFG.n_fft, CFG.hop_length, CFG.n_mels)
    batch = np.zeros((len(ys), max(y.size for y in ys)), np.float32)
    for i, y in enumerate(ys):
        batch[i, : y.size] = y
    with torch.inference_mode():
        together = front(torch.from_numpy(batch))
        for i, y in enumerate(ys):
            alone = front(torch.from_numpy(y)[None])[0]
            n = front.n_frames(y.size)
            torch.testing.assert_close(together[i, :n], alone, rtol=0, atol=5e-4)


def test_preparer_repeat_pads_and_caps() -> None:
    prep = MusicnnPreparer(replace(CFG, max_patches=2))
    assert isinstance(prep, Preparer) and prep.sample_rate == 16000
    short = np.arange(1000, dtype=np.float32)
    padded = prep.prepare(short)
    assert padded.size == prep.min_samples == 186 * 256
    np.testing.assert_array_equal(padded[:1000], short)
    np.testing.assert_array_equal(padded[1000:2000], short)
    np.testing.assert_array_equal(padded[-100:], short[(padded.size - 100) % 1000 :][:100])
    normal = np.ones(prep.min_samples + 5, np.float64)
    assert prep.prepare(normal).dtype == np.float32
    assert prep.prepare(normal).size == normal.size
    assert prep.prepare(np.ones(10**6, np.float32)).size == 2 * 187 * 256
    for bad in (np.zeros(0, np.float32), np.zeros((2, 100), np.float32)):
        with pytest.raises(ValueError, match="mono"):
            prep.prepare(bad)


def test_length_groups_respect_budget() -> None:
    sizes = [10, 50, 20, 40, 30, 100]
    groups = length_groups(sizes, budget=100)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
    for g in groups:
        assert [sizes[i] for i in g] == sorted(sizes[i] for i in g)
        assert len(g) == 1 or len(g) * max(sizes[i] for i in g) <= 100
    assert length_groups([500], budget=100) == [[0]]
    assert length_groups([], budget=100) == []


def test_embedder_contract_and_batching(embedders: dict) -> None:
    emb = embedders["MSD_musicnn"]
    assert isinstance(emb, AudioEmbedder)
    assert (emb.name, emb.sample_rate, emb.dim, len(emb.tag_names)) == ("musicnn", 16000, 200, 50)
    rng = np.random.default_rng(7)
    signals = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (8000, 50000, 100000)]
    prepared = [emb.prepare(y) for y in signals]
    small = MusicnnEmbedder(replace(CFG, batch_size=2, frontend_batch_samples=120000), "cpu")
    together = small.embed_tracks(prepared)
    assert [o.embeddings.shape for o in together] == [(1, 200), (1, 200), (2, 200)]
    assert [o.tags.shape for o in together] == [(1, 50), (1, 50), (2, 50)]
    for out, p in zip(together, prepared, strict=True):
        alone = emb.embed_tracks([p])[0]
        np.testing.assert_allclose(out.embeddings, alone.embeddings, rtol=0, atol=1e-4)
        np.testing.assert_allclose(out.tags, alone.tags, rtol=0, atol=1e-5)
        assert np.all((out.tags >= 0) & (out.tags <= 1))
    assert emb.embed_tracks([]) == []


def test_tag_names_are_column_safe(embedders: dict) -> None:
    for emb in embedders.values():
        assert len(set(emb.tag_names)) == 50
        assert all(re.fullmatch(r"[a-z0-9_]+", t) for t in emb.tag_names)
    msd = embedders["MSD_musicnn"]
    assert msd.tag_labels[33] == "Hip-Hop" and msd.tag_names[33] == "hip_hop"
    assert sanitize_tag("Female Vocalists ") == "female_vocalists"
    assert embedders["MTT_musicnn"].tag_names[:3] == ("guitar", "classical", "slow")


def test_loaders_and_errors(tmp_path: Path) -> None:
    cfg = EmbedConfig()
    assert load_musicnn(cfg, "cpu").tag_names == load_musicnn(cfg, None).tag_names
    assert isinstance(load_musicnn_preparer(cfg), MusicnnPreparer)
    with pytest.raises(ValueError, match="pool"):
        MusicnnEmbedder(replace(CFG, pool="median"))
    with pytest.raises(EmbedderLoadError, match="unknown musicnn model"):
        MusicnnEmbedder(replace(CFG, model="MSD_musicnn_big"))
    from safetensors.numpy import save_file

    bogus = tmp_path / "x.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(bogus))
    with pytest.raises(EmbedderLoadError, match="no 'musicnn' tags"):
        MusicnnEmbedder(replace(CFG, model=str(bogus)))
    save_file({"w": np.zeros(3, np.float32)}, str(bogus), metadata={"musicnn": '{"tags": ["a"]}'})
    with pytest.raises(EmbedderLoadError, match="not a musicnn weights file"):
        MusicnnEmbedder(replace(CFG, model=str(bogus)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(embedders: dict) -> None:
    rng = np.random.default_rng(3)
    prepared = [0.1 * rng.standard_normal(100000).astype(np.float32)]
    cpu = embedders["MSD_musicnn"].embed_tracks(prepared)[0]
    gpu = MusicnnEmbedder(CFG, "cuda").embed_tracks(prepared)[0]
    np.testing.assert_allclose(gpu.tags, cpu.tags, rtol=0, atol=1e-4)


@needs_gtzan
def test_embed_stages_without_ray(tmp_path: Path) -> None:
    """The generic embed stages run musicnn: 200-d pooled rows, 50 tag columns, error rows."""
    from soundclust_ray.config import RunConfig
    from soundclust_ray.stages.embed import EmbedPrepareStage, EmbedStage

    cfg = replace(RunConfig(), embed=EmbedConfig(backends=("musicnn",)))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    paths = [str(GTZAN / "metal.00000.wav"), str(bad)]
    batch = {"track_id": np.array(paths, dtype=object), "path": np.array(paths, dtype=object)}
    out = EmbedStage(cfg, "musicnn", "cpu")(EmbedPrepareStage(cfg, "musicnn")(batch))
    tags = [k for k in out if k.startswith("tag__")]
    assert len(tags) == 50 and "tag__heavy_metal" in tags
    assert out["embedding"].shape == (2, 200)
    assert np.isfinite(out["embedding"][0]).all() and out["error_type"][0] == ""
    assert out["error_type"][1] != "" and np.isnan(out["tag__metal"][1])
    assert max(tags, key=lambda k: out[k][0]) in ("tag__metal", "tag__heavy_metal")


def test_each_model_is_its_own_backend() -> None:
    """msd_musicnn … mtt_vgg load their own weights under their own product name, pooled as
    the musicnn section says; the legacy ``musicnn`` backend still follows ``model``."""
    from soundclust_ray.config import RunConfig
    from soundclust_ray.embed.registry import MODEL_BACKENDS, load_embedder, load_preparer
    from soundclust_ray.stages.embed import strategy_and_pool

    cfg = EmbedConfig(musicnn=replace(CFG, pool="mean_std"))
    assert sorted(MODEL_BACKENDS) == ["msd_musicnn", "msd_vgg", "mtt_musicnn", "mtt_vgg"]
    vgg = load_embedder("mtt_vgg", cfg, "cpu")
    assert (vgg.name, vgg.dim, vgg.tag_names[:2]) == ("mtt_vgg", 256, ("guitar", "classical"))
    assert load_embedder("musicnn", cfg, "cpu").tag_labels[33] == "Hip-Hop"
    assert isinstance(load_preparer("msd_vgg", cfg), MusicnnPreparer)
    run_cfg = replace(RunConfig(), embed=cfg)
    assert strategy_and_pool(run_cfg, "msd_vgg") == ("chunk_average", "mean_std")
