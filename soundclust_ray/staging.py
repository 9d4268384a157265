"""``--recompute PRODUCT``: new shards beside the old ones, which they replace only once written.

The run writes the product's shards (and its error shards) under ``OUT/recompute/<product>``
with the new config hash; the old shards stay readable until that pass has finished. A
stopped recompute resumes from its staging folder (same hash) on the next ``--recompute``;
staging shards of another hash are a previous attempt with other settings, and go. Only files
soundclust wrote are ever deleted: ``part-*`` shards and ``<product>-*`` error shards.
"""

from __future__ import annotations

import pyarrow.fs as pafs

from soundclust_ray import outdir, shards


def error_prefix(product: str) -> str:
    """Start of the error shard names a product's writer uses (``stages/writer.ShardWriter``)."""
    return product.replace("/", "-") + "-"


def _error_files(out: str, product: str) -> list[str]:
    return [
        n for n in outdir.list_files(out, outdir.ERRORS_DIR) if n.startswith(error_prefix(product))
    ]


def _delete(out: str, product: str) -> None:
    """Delete a product's shards and error shards (files soundclust wrote)."""
    fs, base = outdir.resolve(out)
    for path in shards.list_shards(out, product):
        fs.delete_file(path)
    for name in _error_files(out, product):
        fs.delete_file(outdir.join(base, outdir.ERRORS_DIR, name))


def prepare(out: str, product: str, config_hash: str) -> str:
    """The staging product of ``product``; a previous attempt's shards of another hash are
    removed, this hash's are kept (the recompute resumes)."""
    staged = outdir.staging_product(product)
    found = shards.shard_config_hashes(out, staged)
    if found and found != {config_hash}:
        _delete(out, staged)
    return staged


def promote(out: str, product: str) -> None:
    """Replace ``product``'s shards and error shards by its staging folder's, then remove the
    emptied staging folders."""
    fs, base = outdir.resolve(out)
    staged = outdir.staging_product(product)
    _delete(out, product)
    fs.create_dir(outdir.join(base, product), recursive=True)
    for path in shards.list_shards(out, staged):
        fs.move(path, outdir.join(base, product, path.rsplit("/", 1)[-1]))
    errors = outdir.join(base, outdir.ERRORS_DIR)
    for name in _error_files(out, staged):
        renamed = error_prefix(product) + name[len(error_prefix(staged)) :]
        fs.move(outdir.join(errors, name), outdir.join(errors, renamed))
    folder = staged
    while folder:
        target = outdir.join(base, folder)
        infos = fs.get_file_info(pafs.FileSelector(target, allow_not_found=True))
        if fs.get_file_info(target).type != pafs.FileType.Directory or infos:
            break
        fs.delete_dir(target)
        folder = folder.rpartition("/")[0]
