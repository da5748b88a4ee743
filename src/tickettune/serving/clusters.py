"""The outage signal: groups of mutually similar incidents opened in a recent window.

When a service breaks, many callers open tickets about it within an hour or two; none of them is a duplicate
of an old ticket, but they are of each other. `recent_clusters` takes the tickets opened in the window, links
them by cosine similarity, and keeps the groups in which every two tickets score at least `min_score` (the
related tier's threshold by default): complete-linkage clustering (scipy.cluster.hierarchy) cut at that
distance, so a chain of pairwise-similar tickets cannot join unrelated ones. Newest group first.

    >>> recent_clusters(tickets, vectors, window=pd.Timedelta("4h"), min_size=4, min_score=0.62)  # doctest: +SKIP
    [{"size": 5, "newest": "2024-03-01T10:52:00+00:00", "oldest": ..., "numbers": [...], "texts": [...]}]
"""

from __future__ import annotations

import re
from typing import Any, Optional

import numpy as np
import pandas as pd

from tickettune.core.errors import UserError

# A window's tickets are compared all against all; beyond this many the newest are kept (an outage shows
# among the newest, and the all-pairs matrix stays below ~100 MB).
MAX_WINDOW_TICKETS = 5000
WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|h|d)\s*$")
UNITS = {"m": "min", "min": "min", "h": "h", "d": "D"}
MAX_WINDOW = pd.Timedelta(days=31)


def parse_window(text: str, name: str = "window") -> pd.Timedelta:
    """A window such as 30m, 4h or 2d (minutes, hours, days; at most 31 days)."""
    match = WINDOW.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"{name}: '{text}' is not a window; send a number and a unit, e.g. 30m, 4h or 2d")
    window = pd.Timedelta(float(match.group(1)), unit=UNITS[match.group(2)])
    if window > MAX_WINDOW:
        raise UserError(f"{name}: '{text}' is longer than 31 days; send a shorter window")
    return window


def recent_clusters(opened: np.ndarray, vectors: np.ndarray, *, until: pd.Timestamp, window: pd.Timedelta,
                    min_size: int, min_score: float) -> list[dict[str, Any]]:
    """Groups of at least `min_size` rows opened in (until - window, until] whose every two vectors score at
    least `min_score`: each as its rows (newest first) and its newest and oldest opening time, newest group first.

    opened: each row's opening time (UTC datetime64, NaT when unknown); vectors: unit-length rows.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    end = np.datetime64(until.tz_convert(None).to_datetime64(), "ns")
    start = end - np.timedelta64(window.value, "ns")
    rows = np.flatnonzero((opened > start) & (opened <= end))
    rows = rows[np.argsort(opened[rows], kind="stable")[::-1]][:MAX_WINDOW_TICKETS]
    if len(rows) < max(2, min_size):
        return []
    similarity = np.clip(vectors[rows] @ vectors[rows].T, -1.0, 1.0)
    distance = 1.0 - similarity[np.triu_indices(len(rows), 1)]
    labels = fcluster(linkage(np.maximum(distance, 0.0), method="complete"), t=1.0 - min_score, criterion="distance")
    clusters = []
    for label in np.unique(labels):
        members = rows[labels == label]  # newest first, as `rows` is ordered
        if len(members) >= min_size:
            clusters.append({"rows": members, "newest": opened[members[0]], "oldest": opened[members[-1]]})
    return sorted(clusters, key=lambda c: c["newest"], reverse=True)


def window_end(until: Optional[str]) -> pd.Timestamp:
    """The end of the window: `until` (ISO date-time) or now."""
    from tickettune.serving.filters import parse_time

    return parse_time(until, "until") if until else pd.Timestamp.now(tz="UTC")
