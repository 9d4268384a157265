"""Every manifest row ends in a product's shards or in errors.parquet, and clustered or failed."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from helpers import config_with
from test_analysis_driver import make_out

from soundclust_ray import shards
from soundclust_ray.analysis.driver import analyze
from soundclust_ray.errors import AccountingError
from soundclust_ray.runinfo import check_accounting


def test_a_complete_out_passes_before_and_after_the_analysis(tmp_path):
    make_out(tmp_path, errors=2)
    check_accounting(str(tmp_path), ["features"], analysed=False)
    analyze(str(tmp_path), config_with(k=3), progress=False)
    check_accounting(str(tmp_path), ["features"], analysed=True)


def test_a_row_lost_from_the_shards_or_the_clusters_is_a_bug(tmp_path):
    ids, _, _ = make_out(tmp_path, errors=1)
    analyze(str(tmp_path), config_with(k=3), progress=False)
    clusters = pq.read_table(tmp_path / "clusters.parquet")
    pq.write_table(clusters.slice(1), tmp_path / "clusters.parquet")
    with pytest.raises(AccountingError, match="1 manifest rows are neither in the clusters"):
        check_accounting(str(tmp_path), ["features"], analysed=True)
    check_accounting(str(tmp_path), ["features"], analysed=False)
    with pytest.raises(AccountingError, match="neither in embeddings/musicnn"):
        check_accounting(str(tmp_path), ["features", "embeddings/musicnn"], analysed=False)
    first = shards.list_shards(str(tmp_path), "features")[0]
    table = pq.read_table(first)
    pq.write_table(table.slice(1), first)
    with pytest.raises(AccountingError, match="neither in features nor in errors.parquet"):
        check_accounting(str(tmp_path), ["features"], analysed=False)
