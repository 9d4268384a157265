"""The stages of a run's one pass (``stages.passes``' layout): each track decoded once.

``TrackStage`` (CPU actors) decodes a track once, resamples it to every rate its pending
products read, and computes them: its feature families, its classic chunks, each embedding
backend's model input and, for backends whose model runs in the CPU actors
(``stages.embed.separate_model_actors`` false: small models on a host without GPUs), the
model itself; ``stages.embed.PassEmbedStage`` runs the others' models in actors of their own
(GPUs, or a large model's threaded CPU actors) on the model input prepared here. Both reuse the
products' own stages (``FeatureStage``, ``ClassicChunkStage``, ``EmbedPrepareStage``,
``EmbedStage``), so a product computes the same values whichever way the pass is laid out.

``stages.embed`` is imported only when the pass has a backend: it imports torch, which doubles
a features-only actor's memory (peak RSS after one track, 2026-12-03: 204 MiB without, 428 MiB
with) and adds 0.7 s to its start.
"""

from __future__ import annotations

import numpy as np

from soundclust_ray import outdir
from soundclust_ray.config import FEATURE_FAMILY_NAMES, RunConfig
from soundclust_ray.stages.base import (
    NODE_FIELD,
    Decoded,
    current_node_id,
    decode_track,
    map_tracks,
)
from soundclust_ray.stages.features import (
    STAGE_NAME,
    ClassicChunkStage,
    FeatureStage,
    feature_resources,
)
from soundclust_ray.stages.passes import PRODUCTS_FIELD, nest, pending_keys, track_rows

CHUNKS_KEY = outdir.FEATURE_CHUNKS


class TrackStage:
    """CPU actor: one decode per track for every product of the pass still pending for it.

    ``keys``: the pass's product keys (families, ``features_chunks``, backends); ``models``:
    the backends whose model runs here (their rows leave embedded); the other backends leave
    their model input in ``<backend>@prepared`` for their :class:`PassEmbedStage`.
    """

    NAME = STAGE_NAME
    READS = ("track_id", "path", PRODUCTS_FIELD)
    resources = staticmethod(feature_resources)

    def __init__(self, cfg: RunConfig, keys: tuple[str, ...], models: tuple[str, ...] = ()):
        self.cfg = cfg
        families = tuple(k for k in keys if k in FEATURE_FAMILY_NAMES)
        self.features = FeatureStage(cfg, families) if families else None
        self.chunks = ClassicChunkStage(cfg) if CHUNKS_KEY in keys else None
        backends = [k for k in keys if k not in families and k != CHUNKS_KEY]
        self.preparers, self.models = {}, {}
        if backends:
            from soundclust_ray.stages.embed import EmbedPrepareStage, EmbedStage

            self.preparers = {b: EmbedPrepareStage(cfg, b) for b in backends}
            self.models = {b: EmbedStage(cfg, b) for b in models}

    def rates(self, wanted: list[str]) -> list[int]:
        """The sample rates the track's pending products read."""
        rates = self.features.rates(wanted) if self.features else []
        if self.chunks and CHUNKS_KEY in wanted:
            rates.append(self.cfg.features.classic.sample_rate)
        rates += [p.sample_rate for b, p in self.preparers.items() if b in wanted]
        return list(dict.fromkeys(rates))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        wanted = pending_keys(batch)
        decoded = [
            decode_track(str(path), self.rates(keys), self.cfg.audio) if keys else None
            for path, keys in zip(batch["path"], wanted, strict=True)
        ]
        out = self._families(batch, wanted, decoded)
        out["path"] = np.asarray(batch["path"], dtype=object)
        if self.chunks:
            out.update(self._chunks(batch, _todo(wanted, CHUNKS_KEY), decoded))
        for backend in self.preparers:
            out.update(self._backend(batch, backend, _todo(wanted, backend), decoded))
        return out

    def _families(self, batch, wanted: list[list[str]], decoded: list[Decoded]) -> dict:
        """The families' flat columns, or just the per-track columns when the pass has none."""
        if self.features is None:
            track_ids = np.asarray(batch["track_id"]).astype(str).astype(object)
            return {"track_id": track_ids, NODE_FIELD: np.full(len(track_ids), current_node_id())}
        names = {f.name for f in self.features.families}
        pending = [",".join(k for k in keys if k in names) for keys in wanted]
        families = {"track_id": batch["track_id"], "families": np.asarray(pending, dtype=object)}
        return self.features.family_columns(families, decoded)

    def _chunks(self, batch, todo: np.ndarray, decoded: list[Decoded]) -> dict:
        signals = {str(batch["track_id"][i]): decoded[i] for i in np.flatnonzero(todo)}
        rate = self.cfg.features.classic.sample_rate

        def rows(track_id: str, _path: str) -> list[dict[str, float]]:
            signal = signals[track_id]
            if isinstance(signal, Exception):
                raise signal
            return self.chunks.chunk_rows(signal[rate])

        part = map_tracks(track_rows(batch, todo), rows, CHUNKS_KEY, self.chunks.fill)
        return nest(CHUNKS_KEY, len(todo), todo, part)

    def _backend(self, batch, backend: str, todo: np.ndarray, decoded: list[Decoded]) -> dict:
        """A backend's embedded rows (model here), or its model input for its own actors."""
        from soundclust_ray.stages.embed import prepared_columns

        picked = [decoded[i] for i in np.flatnonzero(todo)]
        prepared = self.preparers[backend].prepared_batch(track_rows(batch, todo), picked)
        if backend in self.models:
            return nest(backend, len(todo), todo, self.models[backend](prepared))
        return prepared_columns(backend, todo, prepared, self.preparers[backend].fill)


def _todo(wanted: list[list[str]], key: str) -> np.ndarray:
    return np.array([key in keys for keys in wanted], dtype=bool)
