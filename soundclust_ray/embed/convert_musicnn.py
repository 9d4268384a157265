"""Convert the musicnn TF checkpoints inside the ``musicnn`` 0.1.0 wheel to safetensors.

Reproduces ``soundclust_ray/embed/weights/`` without TensorFlow:

    pip download musicnn==0.1.0 --no-deps -d /tmp/musicnn_wheel
    python -m soundclust_ray.embed.convert_musicnn /tmp/musicnn_wheel/musicnn-0.1.0-py3-none-any.whl

Only the model tensors are kept (64 for musicnn, 32 for vgg; Adam slots and ``beta*_power``
are dropped), laid out as torch expects; the 50 tag labels are read from the wheel's
``configuration.py`` and stored in the file's metadata together with the wheel's SHA-256; the
output is byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from soundclust_ray.embed.musicnn import METADATA_KEY, MODEL_NAMES, VGG_MODELS, WEIGHTS_DIR
from soundclust_ray.embed.tf_checkpoint import read_tensors

LABELS = {m: f"{m[:3]}_LABELS" for m in MODEL_NAMES}
"""Which list of ``musicnn/configuration.py`` names each model's outputs."""


def _bn(tf: str, torch: str) -> dict[str, tuple[str, str]]:
    names = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean"}
    names["moving_variance"] = "running_var"
    return {f"{torch}.{t}": (f"{tf}/{k}", "bn") for k, t in names.items()}


def _layer(tf: str, torch: str, kind: str) -> dict[str, tuple[str, str]]:
    return {f"{torch}.weight": (f"{tf}/kernel", kind), f"{torch}.bias": (f"{tf}/bias", "bias")}


def vgg_tensor_map() -> dict[str, tuple[str, str]]:
    """The vgg graph's map (:class:`~soundclust_ray.embed.musicnn.VggModel`), as ``tensor_map``."""
    m: dict[str, tuple[str, str]] = {}
    m |= _bn("batch_normalization", "input_bn")
    for i in range(5):
        m |= _layer(f"{i + 1}CNN", f"convs.{i}", "conv2d")
        m |= _bn(f"batch_normalization_{i + 1}", f"conv_bn.{i}")
    m |= _layer("dense", "classifier", "dense")
    return m


def model_tensor_map(model: str) -> dict[str, tuple[str, str]]:
    """``vgg_tensor_map`` for the vgg pair, ``tensor_map`` for the musicnn pair."""
    return vgg_tensor_map() if model in VGG_MODELS else tensor_map()


def tensor_map() -> dict[str, tuple[str, str]]:
    """torch state-dict key → (TF variable name, layout conversion), in TF creation order."""
    m: dict[str, tuple[str, str]] = {}
    m |= _bn("batch_normalization", "input_bn")
    for i in range(2):
        m |= _layer(f"conv2d{'_1' if i else ''}", f"timbral.{i}", "conv2d")
        m |= _bn(f"batch_normalization_{i + 1}", f"timbral_bn.{i}")
    for i in range(3):
        m |= _layer(f"conv2d_{i + 2}", f"temporal.{i}", "conv2d")
        m |= _bn(f"batch_normalization_{i + 3}", f"temporal_bn.{i}")
    for i in range(3):
        m |= _layer(f"conv2d_{i + 5}", f"mid.{i}", "conv1d")
        m |= _bn(f"batch_normalization_{i + 6}", f"mid_bn.{i}")
    m |= _bn("batch_normalization_9", "pool_bn")
    m |= _layer("dense", "dense", "dense")
    m |= _bn("batch_normalization_10", "dense_bn")
    m |= _layer("dense_1", "classifier", "dense")
    return m


def to_torch_layout(value: np.ndarray, kind: str) -> np.ndarray:
    """TF HWIO conv / (in, out) dense kernels → torch OIHW / (O, I, k) / (out, in)."""
    if kind == "conv2d":
        value = value.transpose(3, 2, 0, 1)
    elif kind == "conv1d":  # (7, Cin, 1, 64): a full-width 2-D conv is a 1-D conv over time
        value = value[:, :, 0, :].transpose(2, 1, 0)
    elif kind == "dense":
        value = value.T
    return np.ascontiguousarray(value, dtype=np.float32)


def convert_tensors(
    tensors: dict[str, np.ndarray], model: str = "MSD_musicnn"
) -> dict[str, np.ndarray]:
    """A state dict for ``model``'s graph (MusicnnModel or VggModel)."""
    mapping = model_tensor_map(model)
    return {key: to_torch_layout(tensors[tf], kind) for key, (tf, kind) in mapping.items()}


def read_labels(wheel: zipfile.ZipFile) -> dict[str, list[str]]:
    """``MSD_LABELS`` and ``MTT_LABELS`` from the wheel's configuration.py, without importing it."""
    tree = ast.parse(wheel.read("musicnn/configuration.py"))
    out: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in LABELS.values():
                out[name] = list(ast.literal_eval(node.value))
    return out


def convert_wheel(wheel_path: str | Path, out_dir: str | Path = WEIGHTS_DIR) -> list[Path]:
    """Write ``<model>.safetensors`` for the four models and the wheel's LICENSE."""
    from safetensors.numpy import save_file

    wheel_path, out_dir = Path(wheel_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(wheel_path.read_bytes()).hexdigest()
    written: list[Path] = []
    with zipfile.ZipFile(wheel_path) as wheel:
        labels = read_labels(wheel)
        for model in MODEL_NAMES:
            index = wheel.read(f"musicnn/{model}/.index")
            data = wheel.read(f"musicnn/{model}/.data-00000-of-00001")
            names = [tf for tf, _ in model_tensor_map(model).values()]
            state = convert_tensors(read_tensors(index, [data], names), model)
            info = {
                "model": model,
                "source": f"musicnn==0.1.0 wheel {wheel_path.name}, musicnn/{model}/",
                "wheel_sha256": digest,
                "license": "ISC, (c) 2019 Music Technology Group, Universitat Pompeu Fabra",
                "tags": labels[LABELS[model]],
            }
            # One metadata key: safetensors writes several keys in random order, one keeps the
            # file byte-for-byte reproducible.
            metadata = {METADATA_KEY: json.dumps(info, sort_keys=True)}
            path = out_dir / f"{model}.safetensors"
            save_file(state, str(path), metadata=metadata)
            written.append(path)
        license_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/LICENSE.md"))
        license_path = out_dir / "LICENSE.musicnn"
        license_path.write_bytes(wheel.read(license_name))
        written.append(license_path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description="musicnn wheel → safetensors weights")
    parser.add_argument("wheel", help="musicnn-0.1.0-py3-none-any.whl (pip download --no-deps)")
    parser.add_argument("--out", default=str(WEIGHTS_DIR), help="output folder")
    args = parser.parse_args()
    for path in convert_wheel(args.wheel, args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
