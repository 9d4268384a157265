"""A product's real stages run in this process, without Ray.

``run --dry-run`` probes a few tracks this way for its time and disk estimate, and
``similar --audio`` computes its query files this way: the same stage classes a run's actors
use, so a query file is decoded, featurized and embedded exactly as a corpus track was.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from soundclust_ray import outdir
from soundclust_ray.config import RunConfig

Batch = dict[str, np.ndarray]


def product_stage(
    cfg: RunConfig, product: str
) -> tuple[Callable[[], Callable[[Batch], Batch]], tuple]:
    """(set-up callable → compute callable, declared columns) of a product, without Ray.

    The set-up (models, JIT caches) is the costly part; the compute callable maps a batch of
    ``track_id, path`` to the product's output batch, error fields included."""
    from soundclust_ray.stages.base import family_batch
    from soundclust_ray.stages.features import ClassicChunkStage, FeatureStage

    if product == outdir.FEATURE_CHUNKS:
        return (lambda: ClassicChunkStage(cfg)), ClassicChunkStage.WRITES
    if product.startswith(outdir.FEATURES + "/"):
        family = product.split("/", 1)[1]

        def setup_family():
            stage = FeatureStage(cfg, (family,))
            return lambda batch: family_batch(stage(batch), family)

        return setup_family, FeatureStage.WRITES
    from soundclust_ray.stages.embed import EmbedPrepareStage, EmbedStage

    backend = product.split("/", 1)[1]

    def setup():
        prepare, model = EmbedPrepareStage(cfg, backend), EmbedStage(cfg, backend)
        return lambda batch: model(prepare(batch))

    return setup, EmbedStage.WRITES


def track_batch(track_ids, paths) -> Batch:
    """The ``track_id, path`` batch the first stage of every product reads."""
    return {
        "track_id": np.asarray([str(t) for t in track_ids], dtype=object),
        "path": np.asarray([str(p) for p in paths], dtype=object),
    }
