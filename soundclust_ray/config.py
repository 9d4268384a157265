"""Every default parameter of the job, named once, with the seed it comes from.

Seeds (in ``../shared/seeds/``):
- 000: soundspace notebook (rhythm/spectral/tonal features, CLAP, centering + L2 sanity checks)
- 001: classic 5 s chunk features and CLAP chunk strategies
- 002: timbre notebook (180-d mel/MFCC/spectral stats, k-means, HDBSCAN, UMAP, PCA)
- 003: Spotify-style tabular embedding (weights, key/mode/explicit, year)
- 004: Million Song Dataset HDF5 statistics and out-of-fold MiniBatchKMeans

Component configs are frozen dataclasses so that a run's config can be hashed (resume) and
shipped to Ray workers unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass

RANDOM_STATE = 42
"""Seed for every random step (k-means, UMAP, KFold, samples); seeds 002 and 004 use 42."""
MINIBATCH_N_INIT = "auto"
"""Restarts of every MiniBatchKMeans (out-of-fold, and k-means above ``minibatch_above`` rows):
scikit-learn's "auto", as seed 004 passes."""

AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aiff", ".aif")
"""Extensions found by a folder scan, compared case-insensitively (seed 002 plus opus/aiff)."""
REMOTE_READ_BLOCK_BYTES = 4 << 20
"""Bytes per ranged read of audio on object storage: a 30 s clip is one GET (not from a seed)."""
REMOTE_READ_CACHED_BLOCKS = 4
"""Blocks a remote reader keeps, so a decoder's seeks back to the header cost no refetch."""


@dataclass(frozen=True)
class AudioConfig:
    """How tracks are decoded before any feature family sees them."""

    max_duration_s: float | None = 600.0
    """Decode at most this many seconds of each track (bounded memory for very long files)."""
    min_duration_s: float = 0.5
    """Tracks shorter than this are an error row (seed 002 falls back below 0.5 s of audio)."""


@dataclass(frozen=True)
class TimbreConfig:
    """The 180-d acoustic embedding of seed 002."""

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 64
    n_mfcc: int = 20
    trim_top_db: float = 30.0
    min_trimmed_s: float = 0.5
    """Keep the untrimmed signal when trimming leaves less than this (seed 002)."""
    rolloff_percent: float = 0.85


@dataclass(frozen=True)
class ClassicConfig:
    """The ~33-d per-chunk features of seed 001."""

    sample_rate: int = 22050
    chunk_s: float = 5.0
    padding_threshold: float = 0.5
    """Zero-pad the last chunk when at least this fraction of it is present (seed 001)."""
    chunk_quantile: float = 0.25
    """Cap chunks per track at this lower quantile of the corpus's durations (seed 001)."""
    max_chunks: int | None = None
    """Chunks kept per track; the pipeline fills it from ``classic_chunk_cap`` (None: all)."""
    n_mfcc: int = 13
    """MFCCs per chunk, each as mean and variance (seed 001)."""
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    """librosa's defaults, which seed 001's feature calls use."""
    rolloff_percent: float = 0.85


@dataclass(frozen=True)
class SoundspaceConfig:
    """The 56 rhythm/spectral/tonal features of seed 000 (librosa + essentia)."""

    sample_rate: int = 22050
    """Rate of the spectral group's own decode (seed 000's SAMPLE_RATE)."""
    essentia_sample_rate: int = 44100
    """Main decode rate; rhythm and tonal groups run here (seed 000's ESSENTIA_SR)."""


FEATURE_FAMILY_NAMES = ("timbre", "classic", "soundspace")
"""Every ``--features`` family (features/registry.py's FAMILIES, checked equal by a test),
spelled here so a misspelt one is refused without importing scipy.signal (seconds)."""


def check_feature_families(names: tuple[str, ...] | list[str]) -> None:
    """ValueError naming the unknown families among ``names`` and the known ones."""
    unknown = [n for n in names if n not in FEATURE_FAMILY_NAMES]
    if unknown:
        known = ", ".join(sorted(FEATURE_FAMILY_NAMES))
        raise ValueError(f"unknown feature family {', '.join(unknown)}; known: {known}")


@dataclass(frozen=True)
class FeaturesConfig:
    """Which signal feature families run and their parameters."""

    families: tuple[str, ...] = ("timbre",)
    """Any of timbre (seed 002, 180 columns), classic (seed 001, 33), soundspace (seed 000, 56)."""
    timbre: TimbreConfig = field(default_factory=TimbreConfig)
    classic: ClassicConfig = field(default_factory=ClassicConfig)
    soundspace: SoundspaceConfig = field(default_factory=SoundspaceConfig)
    chunk_level: bool = False
    """Also write one row per classic chunk (seed 001 chunk-level clustering)."""


@dataclass(frozen=True)
class ClapEmbedConfig:
    """CLAP audio embeddings (seeds 000 and 001)."""

    model: str = "laion/larger_clap_music"
    """Hub id or local directory of a transformers ClapModel (seed 000)."""
    sample_rate: int = 48000
    """Decode rate; must equal the model's feature extractor rate (48 kHz for LAION CLAP)."""
    window_s: float = 10.0
    """Window length; 10 s is the model's native input (shorter windows are repeat-padded)."""
    max_windows: int = 30
    """Cap on windows per track; longer tracks keep this many, evenly spaced."""
    min_last_window: float = 0.5
    """Keep a partial last window when at least this fraction of it is present (seed 001's
    padding_threshold); a track shorter than one window always keeps its single window."""
    batch_size: int = 8
    """Windows per forward pass (seed 000's CLAP_BATCH_SIZE)."""
    strategy: str = "chunk_average"
    """chunk_average (mean per track) or chunk_level (one row per window, majority vote)."""
    fp16: bool = True
    """fp16 autocast on CUDA; CPU always runs fp32."""


@dataclass(frozen=True)
class MusicnnConfig:
    """The musicnn pretrained tagger ported to torch (see shared/notes/musicnn.md).

    The audio parameters are those the models were trained with (musicnn's configuration.py
    and config.json); they are named here, not meant to be changed.
    """

    model: str = "MSD_musicnn"
    """MSD_musicnn / MSD_vgg (Million Song Dataset tags), MTT_musicnn / MTT_vgg (MagnaTagATune),
    or a .safetensors; the backend ``musicnn`` uses it, ``msd_vgg`` etc. name their own."""
    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96
    patch_frames: int = 187
    """Frames per model input (≈ 3 s), hop 187: no overlap, the last partial patch dropped."""
    pool: str = "mean"
    """How patch vectors become one track vector: mean, max or mean_std (mean then std, 2x the
    dims; tags are always the mean, or the max with ``max``). Pooling costs < 0.1 ms a track."""
    layer: str = ""
    """Which activation a track summary is made of; "" = the model's default: penultimate (200-d)
    for the musicnn pair, pool5 for the vgg pair. musicnn: penultimate, max_pool, mean_pool
    (753-d, the mid-end pooled over time as the original ``extractor`` exposes them), logits
    (50 pre-sigmoid tag scores); vgg: pool1 … pool5 (128-d: each block's map averaged over
    time and mel), logits. Every layer comes out of the same forward pass: no extra cost.
    Measured (2026-12-01, 1 torch thread on this 2-core host shared with other jobs, so read
    the ratios): a 30 s track was 2.7 s with MSD_musicnn, 4.0 s with MSD_vgg (1.5x); since the
    CPU GEMM front end of the musicnn pair (bench/embed.py, 2026-12-02: 2.1x) vgg costs ~3x."""
    patch_hop: int = 187
    """Frames between patch starts; < patch_frames overlaps patches (the extractor's
    ``input_overlap``) and costs about patch_frames / patch_hop times the model time (measured,
    30 s track, hop 94 vs 187: 18 vs 10 patches, 3.0x MSD_musicnn and 2.2x MSD_vgg time under
    the same contended load as ``layer``'s figures)."""
    batch_size: int = 32
    """Patches per forward pass."""
    max_patches: int = 200
    """Patches per track at most (≈ 10 min); later audio is not embedded."""
    frontend_batch_samples: int = 2**24
    """Padded samples per batched log-mel front-end call (≈ 17 min of 16 kHz audio)."""
    gemm_rows: int = 1024
    """Windows per matrix product of the CPU front end (embed/musicnn.py GemmMusicnn): ~1 MB of
    copied windows, in cache with its product. Measured (2026-12-02, 1 thread, 32 patches): 512
    to 2048 within 3 % (0.93-0.95 s CPU), a whole patch per product +35 %."""


EMBED_BACKEND_NAMES = ("clap", "musicnn", "msd_musicnn", "mtt_musicnn", "msd_vgg", "mtt_vgg")
"""Every ``--embed`` backend (embed/registry.py's EMBEDDERS, checked equal by a test), spelled
here so the CLI rejects a misspelt one before importing torch or starting Ray."""

MUSICNN_MODEL_NAMES = ("MSD_musicnn", "MTT_musicnn", "MSD_vgg", "MTT_vgg")
"""The bundled ``--musicnn-model`` weights (embed/musicnn.py's MODEL_NAMES, checked equal by a
test), spelled here so the CLI checks the option before importing torch or starting Ray."""

EMBED_BACKENDS_IN_CPU_ACTORS = ("musicnn", "msd_musicnn", "mtt_musicnn", "msd_vgg", "mtt_vgg")
"""Backends whose model runs inside every CPU actor of a run's pass on a host without GPUs
(stages/track.py): the musicnn weights are 2.4-3.2 MB, so a copy per actor costs nothing, and
the decoded track then never crosses the object store to a model pool sized against the
decode pool (on 2 cores that pool kept one core idle: bench/e2e.py --mode default, 2026-12-03,
1.00x the seed loop before). CLAP (~0.8 GB) keeps actors of its own."""

DEFAULT_EMBED_BACKENDS = ("musicnn",)
"""What ``soundclust run`` embeds with when ``--embed`` is not given: musicnn (MSD_musicnn),
whose 50 tag probabilities the ``auto`` matrix clusters (AnalysisConfig.matrix has the
figures). Cost on one core per 30 s track (bench/embed.py, 2026-12-02, 1 thread, 8 GTZAN
clips): 0.29 s CPU for MSD_musicnn (0.59 s before the GEMM front end of issue #17) + 0.05 s
for its 16 kHz decode, beside the 0.10 s of timbre features that every run computes; the tags
come from the same forward pass as the embedding, so choosing them costs nothing. A second
model is not worth doubling the model's time here: MSD+MTT tag probabilities
0.505 / 0.635 / 0.777 and MSD_musicnn+MSD_vgg 0.520 / 0.634 (vgg: 2.3 s a track) against the
single model's 0.572 / 0.708 / 0.764 (mer4q genre / its 4-genre subsets / gtzan_mini)."""


@dataclass(frozen=True)
class EmbedConfig:
    """Which embedding backends run."""

    backends: tuple[str, ...] = ()
    clap: ClapEmbedConfig = field(default_factory=ClapEmbedConfig)
    musicnn: MusicnnConfig = field(default_factory=MusicnnConfig)
    gpus_per_actor: float = 1.0
    """GPUs per embedding actor where the cluster has GPUs (one actor per GPU)."""
    cpus_per_actor: int = 4
    """CPU threads per embedding actor on hosts without a GPU (at most half the cluster's CPUs)."""
    batch_tracks: int = 8
    """Tracks per Ray Data batch sent to a model actor: enough windows per call that the GPU
    is not idle between calls (each call is batched again into model-sized batches)."""
    sanity_max_rows: int = 5000
    """Rows (seeded sample) the pairwise-cosine sanity statistics use (seed 000 used all 2,577)."""


MSD_ANALYSIS_FIELDS = (
    "bars_confidence",
    "bars_start",
    "beats_confidence",
    "beats_start",
    "sections_confidence",
    "sections_start",
    "segments_confidence",
    "segments_loudness_max",
    "segments_loudness_max_time",
    "segments_loudness_start",
    "segments_start",
    "tatums_confidence",
    "tatums_start",
)
"""The one-value-per-event arrays of an MSD track's ``analysis`` group (the 2-D pitches and
timbre have no successive differences to summarise): what ``--msd-fields`` accepts."""


@dataclass(frozen=True)
class MsdConfig:
    """Million Song Dataset HDF5 statistics (seed 004)."""

    fields: tuple[str, ...] = (
        "bars_start",
        "beats_start",
        "sections_start",
        "segments_loudness_max",
        "segments_loudness_max_time",
        "segments_loudness_start",
        "segments_start",
        "tatums_start",
    )
    hist_bins: int = 20
    """Density-histogram bins of the normalised positive differences (seed 004)."""
    oof_k: int = 32
    """Clusters of the per-field out-of-fold MiniBatchKMeans (seed 004)."""
    oof_batch_size: int = 2048
    """MiniBatchKMeans batch size (seed 004)."""
    oof_splits: int = 5
    """KFold splits of the out-of-fold clustering (seed 004); clamped to the row count."""
    batch_size: int = 64
    """Files per Ray Data batch: one file is milliseconds of work, unlike an audio track."""
    shard_rows: int = 2048
    """At least this many tracks per feature shard of an MSD run (millions of tracks)."""


@dataclass(frozen=True)
class TabularConfig:
    """Spotify-style audio-feature vectors (seed 003)."""

    audio_features: tuple[str, ...] = (
        "danceability",
        "energy",
        "valence",
        "tempo",
        "acousticness",
        "instrumentalness",
        "liveness",
        "speechiness",
        "loudness",
        "popularity",
    )
    """Standardized, then weighted; each is optional (reported and skipped when absent)."""
    weights: tuple[float, ...] = (1.2, 1.2, 1.0, 1.0, 0.8, 0.8, 0.7, 0.6, 0.5, 1.0)
    """One weight per audio feature, emphasising rhythm and energy (seed 003)."""
    categorical: tuple[str, ...] = ("key", "mode", "explicit")
    """Appended as raw floats (seed 003); each optional."""
    year_column: str = "year"
    """Standardized and appended last (seed 003); optional."""
    release_date_column: str = "release_date"
    """Where the year comes from (its first 4 characters) when the year column is absent."""
    id_columns: tuple[str, ...] = ("id", "track_id", "artists", "artist_name", "artist")
    """The first of these present is the track id (seed 003 uses ``id``; the artists table has
    only ``artists``); one of them is required."""
    required_columns: tuple[str, ...] = ()
    """Columns that must be present beyond an id and at least one audio feature."""
    column_aliases: tuple[tuple[str, str], ...] = (
        ("track_popularity", "popularity"),
        ("track_album_release_date", "release_date"),
        ("album_release_date", "release_date"),
        ("release_year", "year"),
    )
    """(table column, role) pairs: the public Spotify datasets' names (the 30000-songs table's
    ``track_popularity``/``track_album_release_date``) fill a role when its own name is absent."""
    columns: tuple[tuple[str, str], ...] = ()
    """(role, table column) pairs from ``--column role=name``: the named column fills the role
    (one of ``roles``), before the aliases and over a column of the role's own name."""
    shard_rows: int = 262144
    """Rows per OUT/embeddings/tabular part file."""

    @property
    def roles(self) -> tuple[str, ...]:
        """What ``columns`` may fill: the id, each audio feature and categorical, the year and
        the release date it may come from."""
        return (
            "id",
            *self.audio_features,
            *self.categorical,
            self.year_column,
            self.release_date_column,
        )


def check_tabular_role(role: str, roles: tuple[str, ...]) -> None:
    """ValueError naming the roles (and the closest) when ``role`` is not one of ``roles``:
    spelled here so the CLI refuses a misspelt ``--column`` role before reading the table."""
    import difflib

    if role not in roles:
        close = difflib.get_close_matches(role, roles, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(f"unknown role {role!r} (roles: {', '.join(roles)}){hint}")


HDBSCAN_MIN_CLUSTER_SIZE_PER_SQRT_ROW = 0.25
"""The size rule of HDBSCAN's min_cluster_size (AnalysisConfig.hdbscan_scale_min_cluster_size):
max(4, round(0.25 x sqrt(rows fitted))), so up to 324 rows (seed 002's 13 tracks, the
315-track mer4q_genre) keep the seed's 4. Measured 2026-12-02 (eom, min_samples 2; clusters,
noise, NMI vs genre with noise as a label): 3,415 real 3 s clips (MSD_musicnn per patch of
mer4q_genre + gtzan_mini, centred + L2): seed's 4 gives 140 clusters, 49 %, 0.382; this rule
(15) 13, 44 %, 0.432; 0.5 x sqrt (29) 11, 45 %, 0.424; 1 x sqrt (58) 6, 46 %, 0.401. 28,680
Spotify artist rows (seed 003 weights): 4 gives 1,051 clusters, 76 % noise; this rule (42) 5,
30 %. The 352 tracks' own vectors: 4 gives 10 clusters, 0.487; 5 (their rule value) 6, 0.464.
8 real tracks are all noise (musicnn, GTZAN and Spotify features; 3 instead of 4 does not help
the last two): there the analysis warns (HDBSCAN_WARN_NOISE_FRACTION)."""
HDBSCAN_WARN_NOISE_FRACTION = 0.9
"""At or above this fraction of noise rows (or with a single cluster) HDBSCAN's labels say
nothing about the corpus, and the metrics carry a one-line warning."""


DECODER_ORDER: dict[str, tuple[str, ...]] = {
    ".opus": ("pyav",),
    ".m4a": ("pyav",),
    ".aac": ("pyav",),
    ".mp4": ("pyav",),
}
"""Decoders tried first, per file extension (audio/decode.py; the other one is the fallback, so
a file whose extension lies still decodes); an extension not listed tries
DEFAULT_DECODER_ORDER. bench/decode.py, 2026-12-02, 6 real 30 s clips re-encoded, median ms a
clip, soundfile vs PyAV: wav 3 vs 19, flac 16 vs 23, ogg/vorbis 21 vs 23, mp3 12 vs 21, opus
85 vs 41, m4a/aac: soundfile cannot read it (PyAV 19)."""
DEFAULT_DECODER_ORDER = ("soundfile", "pyav")
"""libsndfile first: it reads wav/flac/ogg/aiff/mp3 without ffmpeg's per-frame Python loop."""


def decoders_for(suffix: str) -> tuple[str, ...]:
    """Both decoders, in the order to try them for a file of this extension."""
    first = DECODER_ORDER.get(suffix.lower(), DEFAULT_DECODER_ORDER)
    return (*first, *(d for d in DEFAULT_DECODER_ORDER if d not in first))


RAY_ANALYSIS_MIN_ROWS = 50_000
"""From this many tracks a run's analysis sends its independent jobs (k-selection fits, OOF
folds, out-of-sample HDBSCAN batches) to Ray tasks when Ray is up: below it the jobs take
seconds (OOF k-means 100k x 512: ~8 s of the 76 s measured at 1M, bench/analysis.py) and the
object-store copy of the matrix and task start-up would be a visible share of them."""

MATRIX_NAMES = ("auto", "features", "embeddings", "tags", "both", "tabular")
"""What ``--matrix`` may cluster (analysis/matrix.py reads each), spelled here so the CLI
checks it before any import of the analysis."""


@dataclass(frozen=True)
class AnalysisConfig:
    """Driver-side scaling, clustering and projection (seeds 002 and 004)."""

    matrix: str = "auto"
    """One of MATRIX_NAMES. auto = ``tags`` (the tag probabilities of every backend that wrote
    them, centred + L2, k-means) when a musicnn model ran, else embeddings, else features, else
    the tabular vectors. Chosen by bench/quality.py (2026-12-02; docs/quality.md), NMI against
    genre of k-means with k = classes, mean of 5 seeds, MSD_musicnn tags vs [its 200-d
    embedding, the previous default] vs (timbre features, the default before it): mer4q_genre
    (315 real mp3, 7 genres) 0.572 [0.538] (0.236: 2.4x); 10 balanced 4-genre subsets of it
    0.708 [0.618] (0.243); gtzan_mini (37 clips) 0.764 [0.800] (0.619); kNN genre precision@10
    0.772 [0.756] (0.460). `soundclust run` on 116 mer4q clips of 4 genres, --k 4: 0.846
    [0.733] (0.250). Ward is within -0.02..+0.04 of k-means on the tags and does not scale to
    a million rows; HDBSCAN is lower on every target."""
    chunk_level: bool = False
    """With matrix=features: cluster the ``--chunk-level`` classic chunks, majority vote per track
    (seed 001)."""
    backend: str | None = None
    """Embedding backend(s) (OUT/embeddings/<backend>) to cluster: one, or several joined by
    ``,`` (an ensemble, one fusion block each); None: every backend in OUT (``tags``: every
    backend that wrote tags)."""
    weights: tuple[tuple[str, float], ...] = ()
    """Per-family weights, e.g. (("timbre", 1.0), ("classic", 0.5)); default 1. With matrix=both
    they are the blocks' shares of the total variance (analysis/fusion.py: each feature family
    and the embedding backend is one block, equal shares by default); otherwise they multiply
    the family's standardized columns."""
    embedding_postprocess: bool = True
    """Center + L2-normalize embeddings before scaling (seed 000)."""
    k: int | str = 8
    """k-means clusters (seed 002 lets the user choose); "auto" picks by silhouette."""
    k_auto_range: tuple[int, int] = (2, 16)
    """Inclusive range of k tried by k="auto"."""
    kmeans_n_init: int = 10
    """KMeans restarts (seed 002)."""
    oof: bool = True
    """Write OUT/oof.parquet: out-of-fold k-means distances and labels (seed 004)."""
    oof_splits: int = 5
    """KFold splits for out-of-fold k-means (seed 004)."""
    minibatch_above: int = 20000
    """Use MiniBatchKMeans (batch 2048, seed 004) above this many rows."""
    minibatch_size: int = 2048
    hdbscan: bool = True
    """Run HDBSCAN (off: the column is all -1). Out-of-sample rows cost 0.057 ms each on 2
    shared cores (bench/analysis.py --oos 20000,200000,3000 --dims 32, 2026-12-01: 13.7x faster
    than approximate_predict's 0.78 ms, same label on 3000 of 3000 rows)."""
    hdbscan_min_cluster_size: int = 4
    """HDBSCAN's smallest cluster: seed 002's value, chosen for its 13 tracks; the floor of the
    size-scaled value (``hdbscan_scale_min_cluster_size``), exact when scaling is off."""
    hdbscan_scale_min_cluster_size: bool = True
    """min_cluster_size = max(hdbscan_min_cluster_size, round(HDBSCAN_MIN_CLUSTER_SIZE_PER_SQRT_ROW
    x sqrt(rows HDBSCAN fits))), so a large corpus is not cut into hundreds of tiny clusters;
    off (what an explicit ``--min-cluster-size`` sets): the value as given."""
    hdbscan_min_samples: int = 2
    neighbors_pca_above: int = 5000
    """Above this many rows HDBSCAN and UMAP run on a PCA projection: their neighbour searches
    degrade in high dimensions (HDBSCAN 10k x 512 took 120 s on 2 cores, 10k x 32 took 1.7 s)."""
    neighbors_pca_dims: int = 32
    """Components of that projection (no seed: seed 002 clusters 13 tracks on all columns)."""
    umap: bool = True
    """Compute the UMAP map (off: umap_x/umap_y are NaN; the slowest step at millions of rows)."""
    umap_n_neighbors: int = 10
    umap_min_dist: float = 0.1
    pca: float | None = None
    """PCA before clustering: int components or a variance fraction; None keeps all."""
    fit_sample: int = 50000
    """Above this many rows HDBSCAN and UMAP are fitted on a seeded sample."""
    predict_batch: int = 50000
    """Rows per out-of-sample assignment batch (bounds temporary memory)."""
    hdbscan_ivf_above: int = 20000
    """From this many fitted points HDBSCAN's out-of-sample rows search an IVF index of them
    instead of all of them (clustering.with_search_index; exact below)."""
    hdbscan_ivf_lists_per_sqrt_point: float = 4.0
    """IVF cells: this x sqrt(fitted points) (800 at the 50k-row fit sample)."""
    hdbscan_ivf_nprobe: int = 16
    """IVF cells each out-of-sample row visits. 50k fitted x 200k new rows of 32 PCA columns
    (bench/analysis.py's clustered data), 2 cores, 2026-12-02: exact search 0.105 ms a row,
    approximate_predict 0.248; IVF nprobe 8 0.0051, 16 0.0071, 32 0.0120 ms a row, each with
    the exact search's label on every row (1.00000)."""
    silhouette_sample: int = 10000
    """Rows of the seeded sample that silhouette (and k="auto") is computed on."""
    summary_nearest: int = 5
    """Tracks nearest each cluster centre listed in the summaries (seed 002 interpretation)."""
    summary_top_values: int = 3
    """Top values listed per categorical metadata column and top tags per cluster."""
    duplicates: bool = True
    """Write OUT/duplicates.parquet: pairs of tracks at or above ``duplicate_threshold``."""
    duplicate_threshold: float = 0.98
    """Cosine in the search geometry (bench/duplicates.py, 2026-12-01: 352 real clips of
    mer4q_genre + gtzan_mini, 144 PyAV re-encodes of 36 of them as mp3 64 kb/s, Opus 96 kb/s,
    FLAC, 22.05 kHz WAV). MSD_musicnn centred + L2: 143 of 144 copies at >= 0.98 (the one
    below, an Opus copy, 0.954), 0 of 61,776 distinct pairs (their max 0.977); timbre
    standardized: 143 of 144 (min 0.979), 1 distinct pair (max 0.987). At 0.95 both find every
    copy but 20-22 distinct pairs."""
    duplicates_exact_max_rows: int = 20_000
    """Above this many tracks the pair search uses an IVF index (exact all-pairs costs n^2: 50k
    x 200 took 50 s on 2 cores); copies this close share a cell."""
    duplicates_nprobe: int = 8
    """IVF cells each track's pair search visits (the similar-track search visits
    SearchConfig.ivf_nprobe = 32). 200k x 200 synthetic clustered rows with 2,000 planted copies
    at cosine 0.982-0.999, 2 cores, 2026-12-02: nprobe 32 104.8 s, all 2,000 found; 8 45.7 s,
    1,998; 4 23.7 s, 1,963. At 1M x 200 the pair search with 32 took ~20 min of a 41 min
    analysis (bench/analysis.py)."""
    report: bool = True
    """Write OUT/report.html."""
    report_max_points: int = 20000
    """Points drawn per map in the report (a seeded sample above this keeps the file small)."""
    report_max_categories: int = 40
    """Metadata columns with at most this many distinct values get a "colour by" choice."""
    report_neighbours: int = 10
    """Nearest tracks the report's player lists for a clicked point (as ``similar``'s default
    count: one screen of tracks to explore by ear)."""
    report_duplicate_pairs: int = 50
    """Near-duplicate pairs the report lists, highest cosine first (one screen to check by
    eye; every pair is in OUT/duplicates.parquet)."""
    random_state: int = RANDOM_STATE


@dataclass(frozen=True)
class SearchConfig:
    """FAISS similar-track index (``soundclust similar``, OUT/index/); not part of a run's hash."""

    exact_max_rows: int = 200_000
    """Up to this many tracks the index is exact (IndexFlatIP: a query scans 200k x 512 in
    ~10 ms on 2 cores); above it an IVF index (bench/similar.py: recall and queries/s)."""
    ivf_cells_per_sqrt_row: float = 1.0
    """IVF cells = this x sqrt(rows) (FAISS's guideline is 1-16 x sqrt(n); 1 keeps the k-means
    training of a 1M-row index near 20 s on 2 cores)."""
    ivf_train_per_cell: int = 64
    """Training rows per IVF cell (FAISS warns below 39)."""
    ivf_nprobe: int = 32
    """Cells a query visits (bench/similar.py, 1M x 512: recall@10 >= 0.95)."""
    query_batch: int = 1024
    """Queries per FAISS call when many rows are queried at once (near-duplicates)."""


@dataclass(frozen=True)
class PlacementConfig:
    """Placing new tracks into a saved clustering (analysis/placement.py)."""

    neighbours: int = 10
    """Saved training rows whose HDBSCAN labels vote and whose UMAP positions are averaged for
    a new track (as UMAP's own n_neighbors default of this project, umap_n_neighbors)."""
    map_sample: int = 50_000
    """Training rows saved for that search (seeded sample; as fit_sample, the rows UMAP and
    HDBSCAN are fitted on above it)."""


DRY_RUN_PROBE_TRACKS = 3
"""Tracks per product that ``run --dry-run`` computes in-process to estimate time and disk: a
few seconds of work (one track is seconds), enough to average out one odd file, and the first
decode/JIT cost is timed apart as set-up rather than spread over so few tracks."""

DRY_RUN_EXAMPLES = 3
"""Invalid manifest rows ``run --dry-run`` shows by path (all of them are counted by reason)."""

PLAIN_PROGRESS_EVERY_S = 15.0
"""Seconds between progress lines when stdout is not a terminal (CI, ``ray job logs``): often
enough to see a job move, rare enough that a million-track log stays readable."""


@dataclass(frozen=True)
class PoolConfig:
    """How the pipeline sizes Ray Data blocks and actor pools (measured on the 2-core bench)."""

    blocks_per_worker: int = 8
    """Input blocks per worker: finer blocks let the last ones finish together (bench/pipeline.py:
    0.68 → 0.71 × cores on 2 cores)."""
    max_block_rows: int = 256
    """Rows per input block at most (a track is seconds of work)."""
    blocks_in_flight_per_actor: int = 2
    """The next block is already there when one ends; no actor hoards a queue at the end."""
    writers_per_cpus: int = 4
    """One shard-writer actor per this many cluster CPUs (writing is I/O; it reserves 0 CPU)."""
    probe_batch_size: int = 16
    """Tracks per batch of the classic family's duration probe (header reads, milliseconds)."""
    probe_num_cpus: float = 0.5
    """CPU share of a duration-probe task."""
    stage_resources: tuple[tuple[str, str, float], ...] = ()
    """Per-run overrides of a stage's declared resources: (stage name, field, value), e.g.
    ("features", "num_cpus", 2.0); fields: num_cpus, num_gpus, batch_size."""


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; hashed into the shards so a resume never mixes configs."""

    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    msd: MsdConfig = field(default_factory=MsdConfig)
    tabular: TabularConfig = field(default_factory=TabularConfig)
    source: str = "audio"
    """audio, msd or tabular."""
    batch_size: int = 4
    """Tracks per Ray Data batch in CPU stages (small: one track is seconds of work)."""
    separate_model_actors: bool | None = None
    """Run every embedding model in actors of its own, fed by the pass's CPU actors (True), or
    inside them (False); None: own actors for a model on GPUs or not in
    EMBED_BACKENDS_IN_CPU_ACTORS (stages/track.py). Outputs are the same either way."""
    shard_rows: int = 64
    """Tracks per Parquet shard at most (files in OUT vs. their size). Not a bound on lost work:
    the writer commits every block it receives before returning (the shard being filled is
    rewritten until it holds this many), so a stop or crash loses only blocks still computing;
    Ray Data has no end-of-stream call in which rows held for a timer could be flushed."""
    max_error_rate: float = 0.5
    """Exit non-zero when more than this fraction of tracks failed."""
    random_state: int = RANDOM_STATE
    pools: PoolConfig = field(default_factory=PoolConfig)


def to_dict(cfg: object) -> dict:
    """A JSON-ready dict of a (nested) config dataclass."""
    if not is_dataclass(cfg):
        raise TypeError(f"not a config dataclass: {type(cfg).__name__}")
    return asdict(cfg)


def from_dict(cls: type, values: dict):
    """A (nested) config dataclass back from its :func:`to_dict` form (run.json's ``config``):
    keys it does not know ignored, missing ones at their defaults, JSON lists back to tuples."""

    def tuples(v):
        return tuple(tuples(x) for x in v) if isinstance(v, list) else v

    kwargs = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        nested = f.default_factory if f.default_factory is not MISSING else None
        if is_dataclass(nested) and isinstance(values[f.name], dict):
            kwargs[f.name] = from_dict(nested, values[f.name])
        else:
            kwargs[f.name] = tuples(values[f.name])
    return cls(**kwargs)


def config_hash(cfg: object) -> str:
    """Stable short hash of a config's values; two runs with equal configs share it."""
    payload = json.dumps(to_dict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
