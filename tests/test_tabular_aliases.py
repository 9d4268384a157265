"""Tables as people have them: the public Spotify datasets' column names fill seed 003's roles."""

from __future__ import annotations

import numpy as np
import pandas as pd

from soundclust_ray.config import TabularConfig
from soundclust_ray.sources.tabular import tabular_vectors


def test_spotify_30000_songs_names_fill_popularity_and_year():
    spotify = pd.DataFrame(
        {
            "track_id": ["a", "b", "c"],
            "danceability": [0.1, 0.5, 0.9],
            "track_popularity": [10, 50, 90],
            "track_album_release_date": ["1999-01-02", "2005", "2019-06"],
        }
    )
    ids, X, report = tabular_vectors(spotify, TabularConfig())
    assert report["renamed_columns"] == {
        "track_popularity": "popularity",
        "track_album_release_date": "release_date",
    }
    assert report["columns"] == ["danceability", "popularity", "year"]
    assert report["year_from"] == "release_date"
    assert np.argsort(X[:, 2]).tolist() == [0, 1, 2]


def test_own_name_wins_over_an_alias():
    table = pd.DataFrame(
        {"id": ["a", "b"], "popularity": [1, 2], "track_popularity": [9, 9], "energy": [0.2, 0.4]}
    )
    _, _, report = tabular_vectors(table, TabularConfig())
    assert report["renamed_columns"] == {}
    assert "popularity" in report["columns"]


def test_column_option_fills_a_role_over_the_roles_own_name():
    from dataclasses import replace

    table = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "energy": [0.1, 0.5, 0.9],
            "year": [1, 1, 1],
            "release_year": [1990, 2000, 2010],
            "plays": [3, 2, 1],
        }
    )
    cfg = replace(TabularConfig(), columns=(("year", "release_year"), ("popularity", "plays")))
    _, X, report = tabular_vectors(table, cfg)
    assert report["columns"] == ["energy", "popularity", "year"]
    assert report["renamed_columns"] == {"release_year": "year", "plays": "popularity"}
    assert np.argsort(X[:, 2]).tolist() == [0, 1, 2]  # the mapped year, not the constant one
    assert np.argsort(X[:, 1]).tolist() == [2, 1, 0]


def test_bad_column_options_are_one_line_before_work(tmp_path):
    from dataclasses import replace

    import pytest

    from soundclust_ray.config import RunConfig
    from soundclust_ray.errors import UserError
    from soundclust_ray.sources.base import RunOptions
    from soundclust_ray.sources.tabular import SOURCE, check_column_roles

    columns = ["id", "energy", "track_popularity"]
    tab = TabularConfig()
    with pytest.raises(ValueError, match="unknown role 'popularty'.*did you mean popularity"):
        check_column_roles(columns, replace(tab, columns=(("popularty", "energy"),)))
    with pytest.raises(ValueError, match="no column 'track_popularty'; close names: track_pop"):
        check_column_roles(columns, replace(tab, columns=(("popularity", "track_popularty"),)))
    twice = (("popularity", "track_popularity"), ("popularity", "energy"))
    with pytest.raises(ValueError, match="role 'popularity' is given by two"):
        check_column_roles(columns, replace(tab, columns=twice))
    path = tmp_path / "table.csv"
    pd.DataFrame({c: [1.0] for c in columns}).to_csv(path, index=False)
    cfg = replace(RunConfig(), tabular=replace(tab, columns=(("year", "release_date"),)))
    with pytest.raises(UserError, match="no column 'release_date'") as err:
        SOURCE.list_inputs(RunOptions(str(path), str(tmp_path / "out")), cfg, print)
    assert "\n" not in str(err.value)
