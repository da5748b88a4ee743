"""Same-problem probes: ticket files whose groups are filed duplicates, searched to see whether tuning kept the job.

A model tuned on coarse labels (topic, category) can search same-topic tickets better and find duplicates worse:
on the IT tickets one recipe gained +0.01 precision@10 by topic and lost 0.07 MRR@10 on real duplicate bug
reports. A probe measures the second number wherever a model is judged (`train --probe`, `evaluate --probe`,
benchmarks/recipes.py): every report of the file is the corpus (most of them in no group: distractors), each
report with a filed duplicate is a query, and MRR@10 and accuracy@10 (a filed duplicate in the top 10) are
compared with the untuned model, with paired intervals over queries.

    >>> probes = read_probes(["hadoop.csv", "seamonkey.csv"], ["problem_id"])   # doctest: +SKIP
    >>> sorted(probes)                                                            # doctest: +SKIP
    ['hadoop', 'seamonkey']
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from tickettune.core.errors import UserError

PREFIX = "probe:"  # result keys of probes: "probe:hadoop"
DEFAULT_GROUP = "problem_id"


def probe_key(name: str) -> str:
    return PREFIX + name


def is_probe(key: str) -> bool:
    return key.startswith(PREFIX)


def probe_name(key: str) -> str:
    return key[len(PREFIX):]


def read_probes(paths: Sequence[str | Path] | None, group_columns: Sequence[str] | None = None,
                text_columns: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Each probe file as a (text, group) table, named by its file name without suffixes.

    group_columns: one column for every probe, or one per probe in order; default problem_id (joined with
    parent_incident links as `tickets.read_tickets` does).
    """
    from tickettune.data.tickets import read_tickets
    from tickettune.evaluation.retrieval import check_retrieval_tickets

    paths = list(paths or [])
    groups = list(group_columns or [])
    if not paths:
        if groups:
            raise UserError("--probe-group names the duplicate column of a --probe file; pass --probe FILE too")
        return {}
    if len(groups) not in (0, 1, len(paths)):
        raise UserError(f"--probe-group given {len(groups)} times for {len(paths)} --probe files; give it once for all "
                        "of them or once per probe, in order")
    columns = groups * len(paths) if len(groups) == 1 else groups or [DEFAULT_GROUP] * len(paths)
    probes: dict[str, pd.DataFrame] = {}
    for path, column in zip(paths, columns):
        name = Path(path).name.split(".")[0]
        if name in probes:
            raise UserError(f"two --probe files are named {name!r}; rename one (probes are reported by file name)")
        table = read_tickets(path, text_columns, column).frame[["text", "group"]].reset_index(drop=True)
        check_retrieval_tickets(table["group"], f"probe {path}")
        probes[name] = table
    return probes
