"""``similar --audio`` and ``--text``: query files and words answered in the run's geometry.

The OUTs here are written the way a run writes them — the run's own stage classes computed in
this process (``stages.inprocess``), their batches as shards, the manifest, run.json's config —
then analysed by the real driver; no Ray start-up, a few seconds each.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import BAD, GTZAN
from test_clap import build_tiny_clap

from soundclust_ray import outdir, shards
from soundclust_ray.analysis.driver import analyze
from soundclust_ray.cli import main
from soundclust_ray.config import (
    AnalysisConfig,
    ClapEmbedConfig,
    EmbedConfig,
    FeaturesConfig,
    RunConfig,
    to_dict,
)
from soundclust_ray.embed.postprocess import center_and_normalize
from soundclust_ray.query import shard_like_table
from soundclust_ray.runinfo import product_hash, write_manifest, write_run_info
from soundclust_ray.stages.inprocess import product_stage, track_batch

CLIPS = ("blues", "classical", "country", "jazz", "metal", "pop")
"""GTZAN songs <genre>.00000 of six genres."""
CLIP_S = 6
CHEAP_ANALYSIS = AnalysisConfig(k=2, oof=False, umap=False, report=False, duplicates=False)


def cut_clips(folder: Path) -> list[Path]:
    """The first CLIP_S seconds of a few GTZAN songs of different genres, as WAV."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in CLIPS:
        y, sr = sf.read(GTZAN / f"{name}.00000.wav", frames=22050 * CLIP_S, dtype="float32")
        paths.append(folder / f"{name}.wav")
        sf.write(paths[-1], y, sr)
    return paths


def write_out(out: Path, cfg: RunConfig, paths: list[Path], products: list[str]) -> str:
    """OUT as a run leaves it, from the run's own stages computed in this process."""
    import pandas as pd

    ids = [p.name for p in paths]
    fs, base = outdir.resolve(str(out))
    for product in products:
        setup, spec = product_stage(cfg, product)
        batch = setup()(track_batch(ids, paths))
        assert (np.asarray(batch["error_type"]).astype(str) == "").all(), batch["error_message"]
        table = shard_like_table(batch, spec)
        shards.write_table_atomic(fs, shards.new_shard_path(base, product), table)
    manifest = pd.DataFrame(
        {"track_id": ids, "path": [str(p) for p in paths], "invalid_reason": ""}
    )
    write_manifest(str(out), manifest)
    hashes = {p: product_hash(cfg, p) for p in products}
    write_run_info(str(out), {"config": to_dict(cfg), "product_hashes": hashes})
    analyze(str(out), cfg.analysis, progress=False)
    return str(out)


def reencode(src: Path, dst: Path, rate: int | None = None) -> Path:
    """``src`` through PyAV's encoder for ``dst``'s container (ogg → opus, flac, mp3, wav →
    16-bit PCM), mono, optionally resampled: the same recording in another file."""
    codec = {".ogg": "libopus", ".flac": "flac", ".mp3": "libmp3lame", ".wav": "pcm_s16le"}
    codec = codec[dst.suffix]
    y, sr = sf.read(src, dtype="float32")
    rate = rate or sr
    with av.open(str(dst), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(y[None, :], format="flt", layout="mono")
        frame.sample_rate = sr
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(piece))
        container.mux(stream.encode(None))
    return dst


@pytest.fixture(scope="module")
def features_out(tmp_path_factory):
    """A features-only OUT (timbre) of six GTZAN clips, and the clips."""
    tmp = tmp_path_factory.mktemp("query_features")
    paths = cut_clips(tmp / "corpus")
    cfg = RunConfig(
        features=FeaturesConfig(families=("timbre",)),
        embed=EmbedConfig(backends=()),
        analysis=CHEAP_ANALYSIS,
    )
    return write_out(tmp / "out", cfg, paths, [outdir.feature_product("timbre")]), paths


def test_reencoded_copies_find_their_original_first(features_out, tmp_path, capsys):
    out, paths = features_out
    original = paths[3]
    copies = [
        reencode(original, tmp_path / "copy.ogg", rate=48000),
        reencode(original, tmp_path / "copy.flac"),
        reencode(original, tmp_path / "copy.mp3", rate=44100),
        reencode(original, tmp_path / "copy_16k.wav", rate=16000),
    ]
    assert main(["similar", out, "--audio", *map(str, copies), "--k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["matrix"] == "features" and result["geometry"]["scaling"] == "standard"
    assert result["query"] == [str(c) for c in copies]
    for copy in copies:
        rows = [r for r in result["neighbours"] if r["query"] == str(copy)]
        assert [r["rank"] for r in rows] == [1, 2, 3]
        assert rows[0]["track_id"] == original.name, (copy.name, rows)
        assert rows[0]["similarity"] > rows[1]["similarity"]


def test_a_corpus_file_itself_is_its_own_neighbour_at_cosine_one(features_out, capsys):
    out, paths = features_out
    assert main(["similar", out, "--audio", str(paths[0]), "--k", "2"]) == 0
    text = capsys.readouterr().out
    head, _, first = text.splitlines()[:3]
    assert head.startswith(f"nearest to {paths[0]}") and "(features, exact)" in head
    assert first.split()[:3] == ["1", paths[0].name, "1.0000"]


def test_bad_files_get_one_line_each_and_the_good_ones_an_answer(features_out, tmp_path, capsys):
    out, paths = features_out
    missing = tmp_path / "nowhere.wav"
    code = main(
        ["similar", out, "--audio", str(BAD / "random_bytes.mp3"), str(paths[1]), str(missing)]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out.startswith(f"nearest to {paths[1]}")
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"error: {BAD / 'random_bytes.mp3'}: ")
    assert lines[1] == f"error: {missing}: no such file"
    assert main(["similar", out, "--audio", str(missing)]) == 2
    assert capsys.readouterr().err == f"error: {missing}: no such file\n"
    assert main(["similar", out, "--audio", str(paths[1]), str(missing), "--json"]) == 2
    result = json.loads(capsys.readouterr().out)
    assert result["errors"] == [{"query": str(missing), "error": "no such file"}]
    assert {r["query"] for r in result["neighbours"]} == {str(paths[1])}


def test_a_run_json_config_that_did_not_compute_the_shards_is_refused(
    features_out, tmp_path, capsys
):
    out, paths = features_out
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    info = json.loads((copy / "run.json").read_text())
    info["config"]["features"]["timbre"]["n_mels"] = 32  # a later run's other options
    (copy / "run.json").write_text(json.dumps(info))
    assert main(["similar", str(copy), "--audio", str(paths[0])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not the one that computed features" in err


def test_query_options_exclude_each_other_and_text_needs_clap(features_out, capsys):
    out, paths = features_out
    assert main(["similar", out, "--audio", str(paths[0]), "--id", paths[0].name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "one of --id, --tag, --list-tags, --audio or --text" in err
    assert main(["similar", out, "--text", "calm solo piano"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--text needs a run with --embed clap" in err


def build_tiny_tokenizer(folder: Path) -> None:
    """A byte-level BPE RobertaTokenizer with a 32-symbol vocabulary (the tiny CLAP's text tower
    has 64 ids), written beside the model as a CLAP checkpoint holds its tokenizer."""
    from transformers import RobertaTokenizer

    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
    for symbol in [*"abcdefghijklmnopqrstuvwxyz", "Ġ"]:
        vocab[symbol] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = RobertaTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=14
    )
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def clap_out(tmp_path_factory):
    """A timbre + CLAP OUT (tiny random CLAP with its tokenizer) of four GTZAN clips cut to
    6 s, clustered on both (features and CLAP fused)."""
    tmp = tmp_path_factory.mktemp("query_clap")
    model = build_tiny_clap(tmp / "clap")
    build_tiny_tokenizer(model)
    paths = cut_clips(tmp / "corpus")[:4]
    clap = ClapEmbedConfig(model=str(model), window_s=2.0)
    cfg = RunConfig(
        features=FeaturesConfig(families=("timbre",)),
        embed=EmbedConfig(backends=("clap",), clap=clap),
        analysis=replace(CHEAP_ANALYSIS, matrix="both"),
    )
    products = [outdir.feature_product("timbre"), outdir.embeddings_product("clap")]
    return write_out(tmp / "out", cfg, paths, products), model, paths


def reference_text_ranking(out: str, model: Path, text: str) -> tuple[list[str], np.ndarray]:
    """transformers' own CLAP text features, centred by the corpus mean of the raw audio
    embeddings, against the corpus rows centred + L2 (seed 000's post-processing)."""
    import torch
    from transformers import AutoTokenizer, ClapModel

    clap = ClapModel.from_pretrained(model, use_safetensors=True).eval()
    tokens = AutoTokenizer.from_pretrained(model)([text], return_tensors="pt")
    with torch.inference_mode():
        t = clap.get_text_features(**tokens)
    t = torch.nn.functional.normalize(getattr(t, "pooler_output", t), dim=-1).numpy()
    tables = [pq.read_table(p) for p in shards.list_shards(out, "embeddings/clap")]
    ids = np.concatenate([tb.column("track_id").to_numpy(zero_copy_only=False) for tb in tables])
    E = np.concatenate([shards.embedding_matrix(tb.column("embedding")) for tb in tables])
    q = t[0] - E.mean(axis=0)
    sims = center_and_normalize(E) @ (q / np.linalg.norm(q))
    order = np.argsort(-sims)
    return [str(i) for i in ids[order]], sims[order]


@pytest.mark.parametrize("clustered", ["both", "embeddings"])
def test_text_is_ranked_by_cosine_in_the_clap_geometry(clap_out, clustered, tmp_path, capsys):
    """Whether the run clustered CLAP alone (the saved transform) or fused with features (the
    CLAP index's own steps), the words are ranked in the CLAP index's geometry."""
    out, model, _ = clap_out
    if clustered != "both":
        shutil.copytree(out, tmp_path / "out")
        out = str(tmp_path / "out")
        analyze(out, replace(CHEAP_ANALYSIS, matrix=clustered, backend="clap"), progress=False)
    assert main(["similar", out, "--text", "calm piano", "--k", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["query"] == "text:calm piano" and result["matrix"] == "embeddings/clap"
    assert result["geometry"]["embeddings"] == "centered + L2-normalized"
    ids, sims = reference_text_ranking(out, model, "calm piano")
    assert [r["track_id"] for r in result["neighbours"]] == ids
    np.testing.assert_allclose([r["similarity"] for r in result["neighbours"]], sims, atol=1e-4)
    # words beyond the text tower's positions are cut, not an indexing error
    assert main(["similar", out, "--text", "calm solo piano " * 8, "--k", "1"]) == 0
    assert capsys.readouterr().out.startswith("nearest to the words 'calm solo piano")


def test_audio_query_of_a_fused_clap_run_finds_the_track(clap_out, tmp_path, capsys):
    out, _, paths = clap_out
    copy = reencode(paths[2], tmp_path / "copy.flac")
    assert main(["similar", out, "--audio", str(copy), "--k", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["matrix"] == "both" and "fusion" in result["geometry"]
    assert result["neighbours"][0]["track_id"] == paths[2].name
    assert result["neighbours"][0]["similarity"] > 0.99


def test_run_config_round_trips_through_run_json():
    from soundclust_ray.config import from_dict

    cfg = RunConfig(
        embed=EmbedConfig(backends=("clap", "musicnn"), clap=ClapEmbedConfig(window_s=5.0)),
        analysis=replace(AnalysisConfig(), weights=(("timbre", 2.0),), pca=0.9),
    )
    assert from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg
