"""The version of the code behind each product: bump a number when that code's output changes.

Each product's config hash (``runinfo.product_hash``) covers its settings and its number here,
so a rerun after such a change recomputes that product alone (``--recompute PRODUCT``) instead
of mixing old and new rows, and leaves every other product of OUT as it is.
"""

from __future__ import annotations

FEATURE_FAMILY_VERSIONS = {"timbre": 1, "classic": 1, "soundspace": 1}
"""features/<family>: the pure functions in ``features/<family>.py`` and what they call."""
CLASSIC_CHUNKS_VERSION = 1
"""features_chunks: ``features/classic.compute_classic_chunks``."""
EMBEDDING_VERSIONS = {"musicnn": 1, "clap": 1, "tabular": 1}
"""embeddings/<backend>: the model wrapper, its pooling and post-processing (``embed/``), or
the tabular source's vectors; ``musicnn`` stands for every musicnn/vgg backend (msd_vgg, …),
which share that code."""
MSD_VERSION = 1
"""features of an MSD run: ``sources/msd_h5.py``'s statistics."""
