"""Backend names → loaders, so stages and the CLI pick a model by name.

``EMBEDDERS`` maps a name to ``loader(cfg, device) -> AudioEmbedder``. ``PREPARERS`` optionally
maps a name to a weight-free ``loader(cfg) -> Preparer`` so CPU decode tasks do not each load a
large model only to cut windows; a backend without one is loaded on CPU instead.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from soundclust_ray.config import EmbedConfig
from soundclust_ray.embed.base import AudioEmbedder, Preparer
from soundclust_ray.embed.clap import load_clap, load_clap_preparer
from soundclust_ray.embed.musicnn import MODEL_NAMES, load_musicnn, load_musicnn_preparer

MODEL_BACKENDS = {m.lower(): m for m in MODEL_NAMES}
"""One backend per shipped musicnn/vgg model (msd_musicnn … mtt_vgg), so several run in one
job, each its own product embeddings/<backend>; ``musicnn`` uses ``cfg.musicnn.model``."""

EMBEDDERS: dict[str, Callable[[EmbedConfig, str], AudioEmbedder]] = {
    "clap": load_clap,
    "musicnn": load_musicnn,
    **{b: partial(load_musicnn, model=m, name=b) for b, m in MODEL_BACKENDS.items()},
}

PREPARERS: dict[str, Callable[[EmbedConfig], Preparer]] = {
    "clap": load_clap_preparer,
    "musicnn": load_musicnn_preparer,
    **{b: load_musicnn_preparer for b in MODEL_BACKENDS},
}


def _check(name: str) -> None:
    if name not in EMBEDDERS:
        raise ValueError(
            f"unknown embedding backend {name!r}; known: {', '.join(sorted(EMBEDDERS))}"
        )


def default_device() -> str:
    """'cuda' when torch sees a GPU, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_embedder(name: str, cfg: EmbedConfig, device: str | None = None) -> AudioEmbedder:
    """Load a backend's model on ``device`` (default: cuda if available, else cpu).

    Raises:
        ValueError: unknown backend name.
        EmbedderLoadError: the weights could not be loaded (message says how to fix it).
    """
    _check(name)
    return EMBEDDERS[name](cfg, device or default_device())


def load_preparer(name: str, cfg: EmbedConfig) -> Preparer:
    """The CPU half of a backend, without model weights where the backend allows it."""
    _check(name)
    if name in PREPARERS:
        return PREPARERS[name](cfg)
    return EMBEDDERS[name](cfg, "cpu")
