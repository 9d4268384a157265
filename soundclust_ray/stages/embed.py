"""Embedding stages: CPU decode + windowing, then batched model inference on GPU (or CPU) actors.

``EmbedPrepareStage`` reads ``track_id, path`` and writes ``track_id, path, prepared`` (one
ragged float32 array per track: CLAP windows, musicnn padded signal) + the error fields.
``EmbedStage`` reads that and writes ``track_id, path`` [+ ``window_index`` for chunk_level]
+ ``embedding`` (n, dim) float32 + ``tag__<name>`` float32 (backends with tags) + the error
fields + ``node_id``. Rows that failed in prepare pass through with their error. Works for any
backend in ``embed.registry``; the model is loaded once per actor. In a run's pass
(``stages.track``), ``PassEmbedStage`` is a backend's model actor when the model does not run
inside the pass's CPU actors (:func:`separate_model_actors`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from soundclust_ray.config import EMBED_BACKENDS_IN_CPU_ACTORS, RunConfig
from soundclust_ray.embed.base import WindowOutputs
from soundclust_ray.embed.pooling import check_strategy, pool_windows
from soundclust_ray.embed.registry import MODEL_BACKENDS, load_embedder, load_preparer
from soundclust_ray.ray_env import cluster_cpus, cluster_gpus, ray_running
from soundclust_ray.stages.base import (
    ERROR_FIELDS,
    NODE_FIELD,
    TODO_FIELD,
    TRACK_COLUMNS,
    Decoded,
    Resources,
    current_node_id,
    decode_track,
    error_message,
    family_field,
    ragged,
)
from soundclust_ray.stages.passes import nest, track_rows
from soundclust_ray.stages.writer import EMBEDDING_TYPE

PREPARED = "prepared"
EMBEDDING = "embedding"
WINDOW_INDEX = "window_index"
TAG_PREFIX = "tag__"


def prepare_stage_name(backend: str) -> str:
    """Error-row stage name of the CPU half (decode + windowing)."""
    return f"embed_prepare:{backend}"


def embed_stage_name(backend: str) -> str:
    """Error-row stage name of the model half."""
    return f"embed:{backend}"


def strategy_and_pool(cfg: RunConfig, backend: str) -> tuple[str, str]:
    """A backend's strategy (chunk_average | chunk_level) and window pooling (mean | max).

    Read from the backend's own config section when it has the field (CLAP has ``strategy``,
    musicnn has ``pool``; the per-model backends msd_vgg … share the musicnn section); defaults
    are chunk_average and mean (seed 001).
    """
    section = getattr(cfg.embed, "musicnn" if backend in MODEL_BACKENDS else backend, None)
    strategy = check_strategy(getattr(section, "strategy", "chunk_average"))
    return strategy, getattr(section, "pool", "mean")


def embed_resources(cfg: RunConfig, backend: str) -> Resources:
    """One model actor per GPU where the cluster has GPUs, else a CPU pool of threaded actors."""
    gpus = cluster_gpus()
    if gpus >= cfg.embed.gpus_per_actor > 0:
        n = max(1, int(gpus // cfg.embed.gpus_per_actor))
        return Resources(
            num_cpus=1.0,
            num_gpus=cfg.embed.gpus_per_actor,
            batch_size=cfg.embed.batch_tracks,
            concurrency=n,
        )
    # Leave at least one CPU to the prepare (decode) workers, or the two pools deadlock.
    cpus = cluster_cpus()
    per_actor = max(1, min(cfg.embed.cpus_per_actor, cpus // 2))
    return Resources(
        num_cpus=float(per_actor),
        batch_size=cfg.embed.batch_tracks,
        concurrency=(1, max(1, (cpus - 1) // per_actor)),
    )


def embed_prepare_resources(cfg: RunConfig, backend: str) -> Resources:
    """Decode + windowing: one CPU per worker, Ray batches of ``cfg.batch_size`` tracks."""
    return Resources(num_cpus=1.0, batch_size=cfg.batch_size)


def worker_cpus() -> int | None:
    """Whole CPUs Ray reserved for this worker (task or actor), or None outside a Ray worker."""
    if not ray_running():
        return None
    import ray

    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except AssertionError:  # the driver process is no worker
        return None
    return max(1, int(cpus)) if cpus else None


def pin_torch_threads() -> None:
    """In a Ray worker, torch's intra-op threads = the CPUs Ray reserved for it.

    Ray sets OMP_NUM_THREADS only where it is unset, and torch may size its pool before; a CPU
    model actor with more threads than its CPUs fights the other workers for cores (bench/embed.py
    on this 2-core host beside another job, 2026-12-02: 3.2 s per 10 s track with 2 threads,
    0.30 s with 1). Outside Ray (stages run in-process) the caller's setting stands.
    """
    cpus = worker_cpus()
    if cpus is not None:
        import torch

        torch.set_num_threads(cpus)


class EmbedPrepareStage:
    """CPU: decode at the backend's rate and cut into model input (no model weights loaded)."""

    NAME = "embed_prepare"
    READS = TRACK_COLUMNS
    WRITES = (("track_id", pa.string()), ("path", pa.string()), (PREPARED, None))
    """Intermediate columns: passed to EmbedStage in memory, never written to a shard."""
    resources = staticmethod(embed_prepare_resources)

    def __init__(self, cfg: RunConfig, backend: str):
        self.cfg = cfg
        self.backend = backend
        self.preparer = load_preparer(backend, cfg.embed)
        probe = self.preparer.prepare(np.zeros(self.preparer.sample_rate, dtype=np.float32))
        self.fill = np.zeros((0,) * probe.ndim, dtype=np.float32)

    @property
    def sample_rate(self) -> int:
        """The rate the backend's model reads."""
        return self.preparer.sample_rate

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rates = (self.sample_rate,)
        decoded = [decode_track(str(p), rates, self.cfg.audio) for p in batch["path"]]
        return self.prepared_batch(batch, decoded)

    def prepared_batch(self, batch: dict[str, np.ndarray], decoded: list[Decoded]) -> dict:
        """The stage's output for tracks already decoded (at :attr:`sample_rate` at least)."""
        node = current_node_id()
        stage = prepare_stage_name(self.backend)
        out: dict[str, list] = {
            k: [] for k in ("track_id", "path", PREPARED, *ERROR_FIELDS, NODE_FIELD)
        }
        for track_id, path, signals in zip(batch["track_id"], batch["path"], decoded, strict=True):
            try:
                if isinstance(signals, Exception):
                    raise signals
                y = signals[self.sample_rate]
                prepared = np.ascontiguousarray(self.preparer.prepare(y), dtype=np.float32)
                error = ("", "", "")
            except Exception as exc:  # noqa: BLE001 - failures are data, see stages/base.py
                prepared, error = self.fill, (stage, exc.__class__.__name__, error_message(exc))
            out["track_id"].append(str(track_id))
            out["path"].append(str(path))
            out[PREPARED].append(prepared)
            for name, value in zip(ERROR_FIELDS, error, strict=True):
                out[name].append(value)
            out[NODE_FIELD].append(node)
        return {
            k: ragged(v) if k == PREPARED else np.asarray(v, dtype=object) for k, v in out.items()
        }


class EmbedStage:
    """Model actor: batched inference over the prepared windows of a Ray batch of tracks."""

    NAME = "embed"
    READS = ("track_id", "path", PREPARED)
    WRITES = (
        ("track_id", pa.string()),
        (WINDOW_INDEX, pa.int32()),
        (EMBEDDING, EMBEDDING_TYPE),
        (f"{TAG_PREFIX}*", pa.float32()),
    )
    resources = staticmethod(embed_resources)

    def __init__(self, cfg: RunConfig, backend: str, device: str | None = None):
        self.cfg = cfg
        self.backend = backend
        self.strategy, self.pool = strategy_and_pool(cfg, backend)
        self.embedder = load_embedder(backend, cfg.embed, device)
        if str(getattr(self.embedder, "device", "cpu")).startswith("cpu"):
            pin_torch_threads()
        self.tag_columns = [f"{TAG_PREFIX}{name}" for name in self.embedder.tag_names]

    def _rows(self, outputs: WindowOutputs) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(embeddings, tags, window_index) rows of one track under the strategy."""
        n = outputs.embeddings.shape[0]
        if n == 0:
            raise ValueError("no windows to embed")
        if not np.isfinite(outputs.embeddings).all():
            raise FloatingPointError("model returned non-finite embedding values")
        if self.strategy == "chunk_level":
            return outputs.embeddings, outputs.tags, np.arange(n, dtype=np.int32)
        pooled = pool_windows(outputs, self.pool)
        return pooled.embeddings, pooled.tags, np.zeros(1, dtype=np.int32)

    def _embed(self, prepared: list[np.ndarray]) -> list[WindowOutputs | BaseException]:
        """All tracks at once; if the batch fails, track by track so one bad track is one error."""
        try:
            return list(self.embedder.embed_tracks(prepared))
        except Exception:  # noqa: BLE001 - retried per track below to isolate the culprit
            results: list[WindowOutputs | BaseException] = []
            for p in prepared:
                try:
                    results.append(self.embedder.embed_tracks([p])[0])
                except Exception as exc:  # noqa: BLE001 - failures are data
                    results.append(exc)
            return results

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        node = current_node_id()
        stage = embed_stage_name(self.backend)
        track_ids = [str(t) for t in batch["track_id"]]
        paths = [str(p) for p in batch["path"]] if "path" in batch else [""] * len(track_ids)
        n = len(track_ids)
        errors = [
            tuple(str(batch[f][i]) for f in ERROR_FIELDS)
            if all(f in batch for f in ERROR_FIELDS)
            else ("", "", "")
            for i in range(n)
        ]
        todo = [i for i in range(n) if not errors[i][1]]
        results = dict(
            zip(todo, self._embed([np.asarray(batch[PREPARED][i]) for i in todo]), strict=True)
        )

        cols: dict[str, list] = {
            k: []
            for k in (
                "track_id",
                "path",
                WINDOW_INDEX,
                EMBEDDING,
                "tags",
                *ERROR_FIELDS,
                NODE_FIELD,
            )
        }
        for i in range(n):
            emb = tags = None
            index = np.full(1, -1, dtype=np.int32)
            error = errors[i]
            if i in results:
                try:
                    result = results[i]
                    if isinstance(result, BaseException):
                        raise result
                    emb, tags, index = self._rows(result)
                except Exception as exc:  # noqa: BLE001 - failures are data
                    error, emb, tags = (
                        (stage, exc.__class__.__name__, error_message(exc)),
                        None,
                        None,
                    )
                    index = np.full(1, -1, dtype=np.int32)
            if emb is None:
                emb = np.full((1, self.embedder.dim), np.nan, dtype=np.float32)
            if tags is None and self.tag_columns:
                tags = np.full((emb.shape[0], len(self.tag_columns)), np.nan, dtype=np.float32)
            rows = emb.shape[0]
            cols["track_id"] += [track_ids[i]] * rows
            cols["path"] += [paths[i]] * rows
            cols[WINDOW_INDEX].append(index)
            cols[EMBEDDING].append(emb.astype(np.float32, copy=False))
            if self.tag_columns:
                cols["tags"].append(tags.astype(np.float32, copy=False))
            for name, value in zip(ERROR_FIELDS, error, strict=True):
                cols[name] += [value] * rows
            cols[NODE_FIELD] += [node] * rows
        return self._assemble(cols)

    def _assemble(self, cols: dict[str, list]) -> dict[str, np.ndarray]:
        dim = self.embedder.dim
        out: dict[str, np.ndarray] = {
            "track_id": np.asarray(cols["track_id"], dtype=object),
            "path": np.asarray(cols["path"], dtype=object),
        }
        if self.strategy == "chunk_level":
            out[WINDOW_INDEX] = (
                np.concatenate(cols[WINDOW_INDEX]) if cols[WINDOW_INDEX] else np.zeros(0, np.int32)
            )
        out[EMBEDDING] = (
            np.concatenate(cols[EMBEDDING]) if cols[EMBEDDING] else np.zeros((0, dim), np.float32)
        )
        if self.tag_columns:
            tags = (
                np.concatenate(cols["tags"])
                if cols["tags"]
                else np.zeros((0, len(self.tag_columns)), np.float32)
            )
            for j, name in enumerate(self.tag_columns):
                out[name] = np.ascontiguousarray(tags[:, j])
        for name in (*ERROR_FIELDS, NODE_FIELD):
            out[name] = np.asarray(cols[name], dtype=object)
        return out


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
        rows = track_rows(batch, todo)
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
