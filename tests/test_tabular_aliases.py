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
