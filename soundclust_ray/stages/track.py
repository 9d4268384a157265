"""The stages of a run's one pass (``stages.passes``' layout): each track decoded once.

``TrackStage`` (CPU actors) decodes a track once, resamples it to every rate its pending
products read, and computes them: its feature families, its classic chunks, each embedding
backend's model input and, for backends whose model runs in the CPU actors
(:func:`separate_model_actors` false: small models on a host without GPUs), the model itself.
``PassEmbedStage`` runs a backend's model in actors of its own (GPUs, or a large model's
threaded CPU actors) on the model input the CPU actors prepared. Both reuse the products' own
stages (``FeatureStage``, ``ClassicChunkStage``, ``EmbedPrepareStage``, ``EmbedStage``), so a
product computes the same values whichever way the pass is laid out.
"""

from __future__ import annotations

import numpy as np

from soundclust_ray import outdir
from soundclust_ray.config import EMBED_BACKENDS_IN_CPU_ACTORS, FEATURE_FAMILY_NAMES, RunConfig
from soundclust_ray.stages.base import (
    ERROR_FIELDS,
    NODE_FIELD,
    TODO_FIELD,
    Decoded,
    current_node_id,
    decode_track,
    family_field,
    map_tracks,
    ragged,
)
from soundclust_ray.stages.embed import PREPARED, EmbedPrepareStage, EmbedStage
from soundclust_ray.stages.features import (
    STAGE_NAME,
    ClassicChunkStage,
    FeatureStage,
    feature_resources,
)
from soundclust_ray.stages.passes import PRODUCTS_FIELD, nest, pending_keys

CHUNKS_KEY = outdir.FEATURE_CHUNKS


def separate_model_actors(cfg: RunConfig, backend: str) -> bool:
    """Whether ``backend``'s model runs in actors of its own rather than in the CPU actors.

    Its own actors when they get GPUs, or when the model is large (CLAP: one copy per CPU
    actor would not fit a many-core host; its threaded actors use the cores well). A small
    model (``config.EMBED_BACKENDS_IN_CPU_ACTORS``) on CPUs runs inside every CPU actor: no
    prepared audio crosses the object store and no pool is sized against another.
    ``RunConfig.separate_model_actors`` forces either way.
    """
    if cfg.separate_model_actors is not None:
        return cfg.separate_model_actors
    if EmbedStage.resources(cfg, backend).num_gpus > 0:
        return True
    return backend not in EMBED_BACKENDS_IN_CPU_ACTORS


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

        part = map_tracks(_rows_of(batch, todo), rows, CHUNKS_KEY, self.chunks.fill)
        return nest(CHUNKS_KEY, len(todo), todo, part)

    def _backend(self, batch, backend: str, todo: np.ndarray, decoded: list[Decoded]) -> dict:
        """A backend's embedded rows (model here), or its model input for its own actors."""
        picked = [decoded[i] for i in np.flatnonzero(todo)]
        prepared = self.preparers[backend].prepared_batch(_rows_of(batch, todo), picked)
        if backend in self.models:
            return nest(backend, len(todo), todo, self.models[backend](prepared))
        return prepared_columns(backend, todo, prepared, self.preparers[backend].fill)


class PassEmbedStage:
    """Model actor of one backend in a pass: embeds the tracks whose ``<backend>@prepared`` the
    CPU actors made, and hands every other column on unchanged."""

    NAME = EmbedStage.NAME
    resources = staticmethod(EmbedStage.resources)

    def __init__(self, cfg: RunConfig, backend: str):
        self.backend = backend
        self.model = EmbedStage(cfg, backend)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        key = self.backend
        todo = np.asarray(batch[family_field(key, TODO_FIELD)], dtype=bool)
        rows = _rows_of(batch, todo)
        rows[PREPARED] = np.asarray(batch.pop(family_field(key, PREPARED)), dtype=object)[todo]
        for name in ERROR_FIELDS:
            rows[name] = np.asarray(batch[family_field(key, name)], dtype=object)[todo]
        batch.update(nest(key, len(todo), todo, self.model(rows)))
        return batch


def prepared_columns(backend: str, todo: np.ndarray, prepared: dict, fill: np.ndarray) -> dict:
    """Pass columns of a backend whose model runs in its own actors: its model input (``fill``,
    an empty input of the same rank, for the tracks not computed for it), its todo flags and
    the prepare step's errors."""
    where = np.flatnonzero(todo)
    inputs = [fill] * len(todo)
    for row, track in enumerate(where):
        inputs[track] = prepared[PREPARED][row]
    out = {family_field(backend, TODO_FIELD): todo, family_field(backend, PREPARED): ragged(inputs)}
    for name in ERROR_FIELDS:
        column = np.full(len(todo), "", dtype=object)
        column[where] = prepared[name]
        out[family_field(backend, name)] = column
    return out


def _todo(wanted: list[list[str]], key: str) -> np.ndarray:
    return np.array([key in keys for keys in wanted], dtype=bool)


def _rows_of(batch: dict[str, np.ndarray], todo: np.ndarray) -> dict[str, np.ndarray]:
    """The ``track_id, path`` batch of the ``todo`` rows."""
    return {k: np.asarray(batch[k], dtype=object)[todo] for k in ("track_id", "path")}
