"""The outage signal: complete-linkage groups in a window, hand-made vectors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tickettune.core.errors import UserError
from tickettune.serving.clusters import parse_window, recent_clusters


def unit(*angles_deg):
    angles = np.radians(angles_deg)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def test_groups_in_the_window_newest_first_and_no_chaining():
    # Rows 0-3 within 10 degrees of each other (cosine > 0.98); 4-6 a second group; 7-9 a chain at 25-degree steps
    # (neighbours score 0.906, the ends 0.643): complete linkage at 0.9 keeps the chain apart.
    vectors = unit(0, 3, 6, 10, 90, 92, 94, 200, 225, 250)
    opened = pd.to_datetime(["2024-03-01 10:00", "2024-03-01 10:05", "2024-03-01 10:10", "2024-03-01 10:20",
                             "2024-03-01 11:00", "2024-03-01 11:30", "2024-03-01 11:40",
                             "2024-03-01 10:30", "2024-03-01 10:31", "2024-03-01 10:32"]).to_numpy()
    until = pd.Timestamp("2024-03-01 12:00", tz="UTC")
    found = recent_clusters(opened, vectors, until=until, window=pd.Timedelta("4h"), min_size=3, min_score=0.9)
    assert [c["rows"].tolist() for c in found] == [[6, 5, 4], [3, 2, 1, 0]]
    assert found[0]["newest"] == opened[6] and found[1]["oldest"] == opened[0]
    # A window of 1h30 starting after 10:30 leaves only the second group; min_size 4 then finds nothing.
    assert [c["rows"].tolist() for c in recent_clusters(opened, vectors, until=until, window=pd.Timedelta("90min"),
                                                        min_size=3, min_score=0.9)] == [[6, 5, 4]]
    assert recent_clusters(opened, vectors, until=until, window=pd.Timedelta("90min"), min_size=4, min_score=0.9) == []


@pytest.mark.parametrize(("text", "expected"), [("4h", "4h"), ("30m", "30min"), ("2d", "2D"), ("1.5h", "90min")])
def test_windows(text, expected):
    assert parse_window(text) == pd.Timedelta(expected)


@pytest.mark.parametrize(("text", "message"), [("4", "'4' is not a window"), ("4x", "is not a window"),
                                           ("0h", "is not a window"), ("40d", "longer than 31 days")])
def test_bad_windows(text, message):
    with pytest.raises(UserError, match=message):
        parse_window(text)
