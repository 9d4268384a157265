"""Reference outputs of the ORIGINAL musicnn TensorFlow graph, for tests/data/musicnn_golden.npz.

Run once, in a throwaway venv that is never a project dependency:

    python3.11 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow tf_keras librosa
    pip download musicnn==0.1.0 --no-deps -d /tmp/musicnn_wheel
    TF_USE_LEGACY_KERAS=1 /tmp/tfvenv/bin/python scripts/musicnn_golden.py \
        --wheel /tmp/musicnn_wheel/musicnn-0.1.0-py3-none-any.whl

It builds the graph with the package's own ``models.py``, restores the wheel's checkpoints
and feeds the first ``--seconds`` of two GTZAN clips through the package's own input pipeline
(librosa.load at 16 kHz, librosa's power mel, float16 round trip, log10(10000·x + 1)). The
log compression is done in float32: with numpy >= 2 the package's float16 arithmetic
overflows to inf (see shared/notes/musicnn.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gtzan_mini"
CLIPS = ("classical.00000.wav", "disco.00000.wav")
MODELS = ("MSD_musicnn", "MTT_musicnn", "MSD_vgg", "MTT_vgg")
MUSICNN_LAYERS = ("max_pool", "mean_pool", "penultimate")
"""define_model's outputs kept for the musicnn pair (positions 7, 6, 8), as (batch, dim)."""
SECONDS = 10.0
PATCH_FRAMES = 187


def reference_input(path: Path, seconds: float) -> np.ndarray:
    """(n_patches, 187, 96) log-mel patches exactly as musicnn's extractor makes them."""
    import librosa

    audio, sr = librosa.load(str(path), sr=16000, duration=seconds)
    mel = librosa.feature.melspectrogram(y=audio, sr=sr, hop_length=256, n_fft=512, n_mels=96).T
    mel = mel.astype(np.float16).astype(np.float32)
    logmel = np.log10(10000 * mel + 1)
    n = logmel.shape[0] // PATCH_FRAMES
    return logmel[: n * PATCH_FRAMES].reshape(n, PATCH_FRAMES, 96)


def run_graph(package_dir: Path, model: str, batch: np.ndarray) -> dict[str, np.ndarray]:
    """tags, logits and the layers of the original graph: musicnn's pooled mid-end and
    penultimate; vgg's pool1…pool5 maps averaged over time and mel (as the port summarizes)."""
    import tensorflow as tf

    sys.path.insert(0, str(package_dir.parent))
    from musicnn import models  # the package's own graph code

    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, PATCH_FRAMES, 96])
        is_training = tf.compat.v1.placeholder(tf.bool)
        y, *outs = models.define_model(x, is_training, model, 50)
        if "vgg" in model:
            layers = {f"pool{i + 1}": tf.reduce_mean(o, axis=[1, 2]) for i, o in enumerate(outs)}
        else:
            layers = dict(zip(("mean_pool", "max_pool", "penultimate"), outs[5:], strict=True))
        fetch = {"tags": tf.nn.sigmoid(y), "logits": y, **layers}
    with tf.compat.v1.Session() as sess:
        tf.compat.v1.train.Saver().restore(sess, str(package_dir / model) + "/")
        out = sess.run(fetch, feed_dict={x: batch, is_training: False})
    return {k: v.astype(np.float32) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True, help="musicnn-0.1.0-py3-none-any.whl")
    parser.add_argument("--out", default=str(ROOT / "tests" / "data" / "musicnn_golden.npz"))
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument(
        "--patches",
        help="npz of the input patches (patches_0, patches_1) made by --write-patches in a venv "
        "with librosa, when the TF venv has none",
    )
    parser.add_argument("--write-patches", help="only write the input patches to this npz")
    args = parser.parse_args()
    if args.write_patches:
        inputs = {
            f"patches_{i}": reference_input(DATA / c, args.seconds) for i, c in enumerate(CLIPS)
        }
        np.savez(args.write_patches, **inputs)
        return
    given = np.load(args.patches) if args.patches else None
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(args.wheel) as wheel:
            wheel.extractall(tmp)
        package_dir = Path(tmp) / "musicnn"
        result: dict[str, np.ndarray] = {
            "clips": np.array(CLIPS),
            "models": np.array(MODELS),
            "seconds": np.array(args.seconds),
        }
        for i, clip in enumerate(CLIPS):
            if given is None:
                batch = reference_input(DATA / clip, args.seconds)
            else:
                batch = given[f"patches_{i}"]
            result[f"logmel_sum_{i}"] = batch.astype(np.float64).sum(axis=(1, 2))
            for model in MODELS:
                out = run_graph(package_dir, model, batch)
                for name, value in out.items():
                    result[f"{model}_{name}_{i}"] = value
                tags = out["tags"]
                top = np.argsort(-tags.mean(axis=0))[:3]
                print(f"{clip} {model}: patches {len(batch)}, top tag indices {top.tolist()}")
    np.savez_compressed(args.out, **result)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
