"""Turn tickets into curriculum pairs: a leakage-free split, balanced labels, phases from easy to hard.

`build_pairs(tickets, PairOptions(), model=None)` takes the table from `tickets.read_tickets` (or
`sample.generate_sample` read back) and works in five steps:

1. split: tickets that must stay together (a group with everything linked to it when splitting by
   group; in any case every ticket with the same normalised text) go to one of train / eval / test.
2. choose: per split, the tickets to use. Their number follows the pair counts and the per-ticket
   cap, so that the base model encodes only what the pairs need. Eval/test tickets that are
   near-duplicates of chosen train tickets are left out.
3. score: each chosen ticket is encoded once (the base model, or TF-IDF with no model).
4. candidates: similar = same group; dissimilar = half random, half among the nearest tickets of
   other groups, mined in blocks the size of the test pool so that train and test are mined alike.
   Two tickets that belong to no group (no problem, no parent) are never a dissimilar pair: that
   they are unrelated is unknown.
5. select: balanced labels, each ticket in at most `max_pairs_per_ticket` pairs. Train phases are
   difficulty terciles within each label; eval and test keep only pairs at least as lexically hard as
   the hardest third of train pairs (unless `test_difficulty="all"`).

Beside them: representative test pairs, drawn uniformly among the test split's same-group and different-group
pairs (nothing mined, the pairs a search meets), and every split's tickets, which retrieval searches and the
group losses train on.

Difficulty is how wrong a similarity is: 1 - cosine for similar pairs, cosine for dissimilar ones. The
curriculum uses the base model's cosine (or TF-IDF). Eval and test pairs are always mined and filtered
by TF-IDF: pairs chosen for being the base model's errors would be ranked backwards by it by
construction (ROC-AUC 0.000 on the IT tickets), and any tuned model would look better by selection.

Kept in one file of ~650 lines on purpose: the five steps share one random stream (so that the same seed gives
byte-identical files) and one PairBuilder, and a reader follows the algorithm top to bottom as listed above.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tickettune.core.errors import UserError
from tickettune.core.files import atomic_output_dir
from tickettune.core.models import DEFAULT_MODEL
from tickettune.core.similarity import (
    DIFFICULTY_MAX_SEQ,
    SIMILAR,
    near_duplicate_scores,
    pair_difficulty,
    row_similarity,
    text_matrix,
    tfidf_vectors,
)
from tickettune.core.textio import normalise_text
from tickettune.data.pairs_io import PHASES
from tickettune.data.tickets import TicketTable, link_components

SPLITS = ("test", "eval", "train")
MIN_GROUPS_FOR_GROUP_SPLIT = 30
MIN_TICKETS = 100  # per split, however few pairs are asked for: cheap to encode, and room for the cap
TRAIN_POOL = 1.25  # candidates per train pair: room to respect the per-ticket cap
FILTERED_POOL = 3.5  # tickets for eval/test are chosen for this many candidates per pair: a third are hard enough
FILTERED_CANDIDATES = 7.0  # candidates drawn per eval/test pair from those tickets (the cap applies to the selection)
NEIGHBOURS = 5
MINED_SHARE = 0.5
DIFFICULTY_DEFINITION = "similar pairs: 1 - cosine; dissimilar pairs: cosine; graded labels: |label - cosine|"


DIFFICULTY_METHODS = ("model", "tfidf")
TEST_DIFFICULTIES = ("hard", "all")
SPLIT_UNITS = ("auto", "group", "ticket")


@dataclass(frozen=True)
class PairOptions:
    """How many pairs, how they are split, scored and labelled. Defaults follow the seed notebook."""

    seed: int = 0
    pairs_per_phase: int = 5000
    eval_pairs: int = 1000
    test_pairs: int = 1000
    eval_fraction: float = 0.1
    test_fraction: float = 0.2
    difficulty: str = "model"  # "model" (the base model's cosine) or "tfidf" (lexical, no model)
    model: str = DEFAULT_MODEL
    test_difficulty: str = "hard"  # "hard": eval/test at least as lexically hard as the hard third; "all": unfiltered
    hard_negatives: bool = False  # add a `negative` column (nearest ticket of another group) to similar train pairs
    graded: bool = False
    grade_weights: dict[str, float] | None = None  # field -> label when two tickets share it; default below
    split_by: str = "auto"  # "group", "ticket", or "auto" (group when there are enough groups)
    max_pairs_per_ticket: int = 12
    near_duplicate: float = 0.9  # word-overlap cosine from which an eval/test ticket counts as a copy of a train one

    def __post_init__(self) -> None:
        for name, low in (("seed", 0), ("pairs_per_phase", 1), ("eval_pairs", 2), ("test_pairs", 2),
                          ("max_pairs_per_ticket", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"option {name} = {value!r} is invalid; expected a whole number >= {low}")
        for name, allowed in (("difficulty", DIFFICULTY_METHODS), ("test_difficulty", TEST_DIFFICULTIES),
                              ("split_by", SPLIT_UNITS)):
            if getattr(self, name) not in allowed:
                raise UserError(f"option {name} = {getattr(self, name)!r} is invalid; choose one of {', '.join(allowed)}")
        for name in ("eval_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 0.5:
                raise UserError(f"option {name} = {getattr(self, name)!r} is invalid; expected a fraction in (0, 0.5)")
        if self.eval_fraction + self.test_fraction > 0.6:
            raise UserError("options eval_fraction + test_fraction exceed 0.6; leave most tickets for training")
        if not 0 < self.near_duplicate <= 1:
            raise UserError(f"option near_duplicate = {self.near_duplicate!r} is invalid; expected a similarity in (0, 1]")
        for name, weight in (self.grade_weights or {}).items():
            if not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
                raise UserError(f"grade weight {name}={weight!r} is invalid; expected a number in [0, 1]")


@dataclass
class PairSet:
    """The three pair tables (pairs_io columns plus ticket ids, similarity and difficulty) and their data card."""

    train: pd.DataFrame
    eval: pd.DataFrame
    test: pd.DataFrame
    datacard: dict[str, Any] = field(default_factory=dict)
    representative: pd.DataFrame | None = None  # test pairs drawn uniformly (see representative_pairs)
    tickets: dict[str, pd.DataFrame] = field(default_factory=dict)  # each split's tickets (see ticket_table)


class Tickets:
    """The ticket table as arrays the pair sampler needs: group codes, normalised-text codes, who may be a negative."""

    def __init__(self, frame: pd.DataFrame, linked: bool = False):
        for column in ("text", "group"):
            if column not in frame.columns:
                raise UserError(f"tickets need a '{column}' column (as read_tickets returns); got {', '.join(frame.columns)}")
        if len(frame) < 4:
            raise UserError(f"only {len(frame)} tickets; pairs need at least a few tickets in two or more groups")
        self.frame = frame.reset_index(drop=True)
        self.text = self.frame["text"].astype(str).to_numpy()
        self.group = pd.factorize(self.frame["group"].astype(str))[0]
        self.norm = pd.factorize(pd.Series([normalise_text(t) for t in self.text]))[0]
        sizes = np.bincount(self.group)
        # Grouped by links, a ticket alone in its group (no problem, no parent) has no known relation to another
        # lone ticket: only the links say what is related.
        self.known = sizes[self.group] >= 2 if linked else np.ones(len(self.group), dtype=bool)
        self.n_groups, self.n_multi = len(sizes), int((sizes >= 2).sum())

    def __len__(self) -> int:
        return len(self.text)


def _assign(sizes: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Split per item: items in random order, each to the split furthest below its share of tickets (ties to the
    larger split). An item larger than a third of a split's share goes elsewhere, so that every split holds
    several groups; the largest split takes any item."""
    filled = np.zeros(len(fractions))
    target = fractions * sizes.sum()
    largest = int(np.argmax(fractions))
    out = np.empty(len(sizes), dtype=np.int64)
    for item in rng.permutation(len(sizes)):
        fits = [s for s in range(len(fractions)) if s == largest or sizes[item] <= target[s] / 3]
        split = max(fits, key=lambda s: ((target[s] - filled[s]) / target[s], fractions[s]))
        out[item] = split
        filled[split] += sizes[item]
    return out


def split_tickets(tickets: Tickets, options: PairOptions, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """Split index per ticket (order of SPLITS), the unit per ticket, and the unit kind ('group' or 'ticket')."""
    if tickets.n_groups < 2:
        raise UserError("all tickets are in one group; dissimilar pairs need at least two groups (check --group-by)")
    if tickets.n_multi == 0:
        raise UserError("no group holds two tickets, so no pair is similar; group by a coarser field (--group-by)")
    mode = options.split_by if options.split_by != "auto" else \
        ("group" if tickets.n_multi >= MIN_GROUPS_FOR_GROUP_SPLIT else "ticket")
    keys = [[f"text:{n}"] + ([f"group:{g}"] if mode == "group" else []) for n, g in zip(tickets.norm, tickets.group)]
    units = link_components(keys)
    fractions = np.array([options.test_fraction, options.eval_fraction, 1 - options.test_fraction - options.eval_fraction])
    if mode == "group":
        chunk_of_unit = np.arange(units.max() + 1)
    else:
        # A group's tickets go to the splits two at a time: one ticket alone in a split could form no similar pair.
        group_of_unit = pd.Series(tickets.group).groupby(units).first().to_numpy()
        order = rng.permutation(len(group_of_unit))
        order = order[np.argsort(group_of_unit[order], kind="stable")]
        rank = np.arange(len(order)) - np.searchsorted(group_of_unit[order], group_of_unit[order])
        chunk_of_unit = np.empty(len(order), dtype=np.int64)
        chunk_of_unit[order] = np.unique(group_of_unit[order] * len(order) + rank // 2, return_inverse=True)[1]
    chunks = chunk_of_unit[units]
    split = _assign(np.bincount(chunks), fractions, rng)[chunks]
    for index, name in enumerate(SPLITS):
        counts = np.bincount(tickets.group[split == index], minlength=tickets.n_groups)
        if (counts >= 2).sum() < 1 or (counts > 0).sum() < 2:
            raise UserError(
                f"too few groups to split: the {name} split got {(counts > 0).sum()} group(s), {(counts >= 2).sum()} of "
                f"them with two or more tickets ({len(tickets)} tickets in {tickets.n_groups} groups, split by {mode}); "
                "add tickets, lower --test-fraction/--eval-fraction, or use --split-by ticket")
    return split, units, mode


def _choose(members: np.ndarray, units: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `budget` tickets from `members`, a few from each unit in turn (then a few more from each, while the
    budget is not met), so that no single large group fills a split."""
    if len(members) <= budget:
        return np.sort(members)
    per_round = max(4, budget // 20)
    ordered = members[np.argsort(units[members], kind="stable")]
    by_unit = [rng.permutation(u) for u in np.split(ordered, np.flatnonzero(np.diff(units[ordered])) + 1)]
    order = rng.permutation(len(by_unit))
    chosen: list[int] = []
    for start in range(0, max(len(u) for u in by_unit), per_round):
        for index in order:
            chosen.extend(int(t) for t in by_unit[index][start:start + per_round])
            if len(chosen) >= budget:
                return np.sort(np.array(chosen[:budget], dtype=np.int64))
    return np.sort(np.array(chosen, dtype=np.int64))


def _neighbours(chosen: np.ndarray, tickets: Tickets, matrix, row_of: np.ndarray, block: int,
                rng: np.random.Generator) -> np.ndarray:
    """For each chosen ticket, its NEIGHBOURS most similar tickets of other groups within a random block (-1 pads)."""
    out = np.full((len(tickets), NEIGHBOURS), -1, dtype=np.int64)
    order = rng.permutation(chosen)
    for start in range(0, len(order), block):
        part = order[start:start + block]
        rows = row_of[part]
        sims = matrix[rows] @ matrix[rows].T
        sims = sims.toarray() if hasattr(sims, "toarray") else np.asarray(sims)
        allowed = (tickets.group[part][:, None] != tickets.group[part][None, :]) \
            & (tickets.known[part][:, None] | tickets.known[part][None, :]) \
            & (tickets.norm[part][:, None] != tickets.norm[part][None, :])
        sims = np.where(allowed, sims, -np.inf)
        k = min(NEIGHBOURS, len(part))
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        valid = np.take_along_axis(allowed, top, axis=1)
        out[part, :k] = np.where(valid, part[top], -1)
    return out


def _unique_pairs(a: np.ndarray, b: np.ndarray, n: int, seen: set[int]) -> np.ndarray:
    """Mask of pairs of text codes (below `n`) not seen before in either order, updating `seen`: two tickets with
    the same text would otherwise make one pair twice."""
    keep = np.zeros(len(a), dtype=bool)
    for i, key in enumerate(np.minimum(a, b) * n + np.maximum(a, b)):
        if key not in seen:
            seen.add(int(key))
            keep[i] = True
    return keep


def _candidates(chosen: np.ndarray, tickets: Tickets, neighbours: np.ndarray, n_similar: int, n_dissimilar: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs among `chosen`: same-group ones, then random and mined other-group ones."""
    n = int(tickets.norm.max()) + 1
    seen: set[int] = set()
    firsts, seconds = [], []

    def draw(target: int, propose) -> None:
        got = 0
        for _ in range(8):
            if got >= target:
                return
            a, b = propose(max(64, 2 * (target - got)))
            ok = (a != b) & (b >= 0)
            a, b = a[ok], b[ok]
            ok = tickets.norm[a] != tickets.norm[b]
            a, b = a[ok], b[ok]
            ok = _unique_pairs(tickets.norm[a], tickets.norm[b], n, seen)
            a, b = a[ok][:target - got], b[ok][:target - got]
            firsts.append(a)
            seconds.append(b)
            got += len(a)

    members = chosen[np.argsort(tickets.group[chosen], kind="stable")]
    values, starts, sizes = np.unique(tickets.group[members], return_index=True, return_counts=True)
    start_of, size_of = np.zeros(tickets.n_groups, dtype=np.int64), np.zeros(tickets.n_groups, dtype=np.int64)
    start_of[values], size_of[values] = starts, sizes
    anchors = chosen[size_of[tickets.group[chosen]] >= 2]

    def similar(m: int):
        a = rng.choice(anchors, m)
        g = tickets.group[a]
        return a, members[start_of[g] + rng.integers(0, size_of[g])]

    def random_other(m: int):
        a, b = rng.choice(chosen, m), rng.choice(chosen, m)
        ok = (tickets.group[a] != tickets.group[b]) & (tickets.known[a] | tickets.known[b])
        return a[ok], b[ok]

    mined_anchors = chosen[(neighbours[chosen] >= 0).any(axis=1)]

    def mined(m: int):
        a = rng.choice(mined_anchors, m)
        valid = (neighbours[a] >= 0).sum(axis=1)
        return a, neighbours[a, rng.integers(0, valid)]

    if len(anchors):
        draw(n_similar, similar)
    n_mined = round(n_dissimilar * MINED_SHARE) if len(mined_anchors) else 0
    draw(n_dissimilar - n_mined, random_other)
    if n_mined:
        draw(n_mined, mined)
    return np.concatenate(firsts or [np.zeros(0, int)]), np.concatenate(seconds or [np.zeros(0, int)])


def _grade_fields(table: TicketTable, options: PairOptions) -> dict[str, float]:
    """The graded-label hierarchy: the group field first (1.0 unless given), then the other fields by weight."""
    group_by, tickets = table.group_by or "group", table.frame
    if options.grade_weights is None:
        weights = {f: w for f, w in (("subcategory", 0.6), ("category", 0.3)) if f in tickets.columns and f != group_by}
        if not weights:
            raise UserError("--graded needs fields that grade dissimilar tickets (subcategory, category); "
                            "name them with --grade-weights FIELD=WEIGHT,...")
    else:
        weights = {}
        for name, weight in options.grade_weights.items():
            if name not in tickets.columns and name not in ("group", group_by):
                raise UserError(f"--grade-weights names '{name}', which is not a column of the tickets "
                                f"(columns: {', '.join(map(str, tickets.columns))})")
            weights[name] = float(weight)
    top = weights.pop(group_by, weights.pop("group", 1.0))
    return {"group": top, **dict(sorted(weights.items(), key=lambda kv: -kv[1]))}


def _labels(t1: np.ndarray, t2: np.ndarray, tickets: Tickets, grades: dict[str, float] | None) -> np.ndarray:
    same = tickets.group[t1] == tickets.group[t2]
    if grades is None:
        return same.astype(float)
    labels = np.where(same, grades["group"], 0.0)
    for name, weight in grades.items():
        if name == "group":
            continue
        values = tickets.frame[name].astype(str).to_numpy()
        shared = (values[t1] == values[t2]) & (values[t1] != "") & ~same
        labels = np.where(shared, np.maximum(labels, weight), labels)
    return labels


def _select(t1: np.ndarray, t2: np.ndarray, same: np.ndarray, keep: np.ndarray, target: int, cap: int,
            n_tickets: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to `target` similar and as many dissimilar pairs, each ticket in at most `cap` pairs."""
    uses = np.zeros(n_tickets, dtype=np.int64)
    taken: dict[bool, list[int]] = {True: [], False: []}
    for i in rng.permutation(np.flatnonzero(keep)):
        kind = bool(same[i])
        if len(taken[kind]) < target and uses[t1[i]] < cap and uses[t2[i]] < cap:
            taken[kind].append(int(i))
            uses[t1[i]] += 1
            uses[t2[i]] += 1
    n = min(len(taken[True]), len(taken[False]))
    return np.array(taken[True][:n] + taken[False][:n], dtype=np.int64)


def difficulty_terciles(labels: np.ndarray, difficulty: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Easy / medium / hard by difficulty terciles within each label (ties broken at random)."""
    phase = np.empty(len(labels), dtype=object)
    tiebreak = rng.random(len(labels))
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        ordered = index[np.lexsort((tiebreak[index], difficulty[index]))]
        for name, part in zip(PHASES, np.array_split(ordered, len(PHASES))):
            phase[part] = name
    return phase


def _frame(t1, t2, labels, sim, difficulty, lexical, tickets: Tickets) -> pd.DataFrame:
    return pd.DataFrame({"text1": tickets.text[t1], "text2": tickets.text[t2], "label": labels, "ticket1": t1,
                         "ticket2": t2, "similarity": sim, "difficulty": difficulty, "lexical_difficulty": lexical})


def _hard_negatives(frame: pd.DataFrame, neighbours: np.ndarray, tickets: Tickets) -> pd.Series:
    """For similar pairs: the least used of the anchor's nearest other-group tickets (none for dissimilar pairs)."""
    uses: dict[int, int] = {}
    out: list[object] = []
    for anchor, partner in zip(frame["ticket1"], frame["ticket2"]):
        options = [int(t) for t in neighbours[anchor] if t >= 0 and t != partner]
        if tickets.group[anchor] != tickets.group[partner] or not options:
            out.append(None)
            continue
        pick = min(options, key=lambda t: uses.get(t, 0))
        uses[pick] = uses.get(pick, 0) + 1
        out.append(tickets.text[pick])
    return pd.Series(out, index=frame.index, dtype=object)


def _stats(frame: pd.DataFrame, name: str) -> list[dict[str, Any]]:
    rows = []
    keys = ["phase", "label"] if "phase" in frame.columns else ["label"]
    for key, part in frame.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        phase = key[0] if len(key) == 2 else name
        rows.append({"set": name, "phase": phase, "label": float(key[-1]), "pairs": int(len(part)),
                     "similarity_mean": round(float(part["similarity"].mean()), 4),
                     "difficulty_mean": round(float(part["difficulty"].mean()), 4)})
    order = {p: i for i, p in enumerate(PHASES)}
    return sorted(rows, key=lambda r: (order.get(r["phase"], 9), -r["label"]))


def representative_pairs(members: np.ndarray, tickets: Tickets, n_pairs: int, seed: int,
                         grades: dict[str, float] | None = None) -> pd.DataFrame:
    """Balanced pairs drawn uniformly, nothing mined and nothing filtered by difficulty: similar pairs uniformly among
    all same-group pairs of `members`, dissimilar ones uniformly among all different-group pairs. Their metrics say how
    a model scores the pairs a search actually meets; the hard pairs only stress it."""
    rng = np.random.default_rng([seed, 1])  # its own stream: the other sets stay byte-identical
    known = members[tickets.known[members]]
    groups, sizes = np.unique(tickets.group[known], return_counts=True)
    weights = sizes * (sizes - 1) / 2.0
    by_group = {g: known[tickets.group[known] == g] for g in groups[weights > 0]}
    n = int(tickets.norm.max()) + 1
    seen: set[int] = set()
    taken: dict[bool, tuple[list[int], list[int]]] = {True: ([], []), False: ([], [])}
    target = n_pairs // 2
    for _ in range(64):
        if all(len(taken[kind][0]) >= target for kind in taken):
            break
        if weights.sum() > 0 and len(taken[True][0]) < target:
            picked = rng.choice(groups, 2 * target, p=weights / weights.sum())
            pairs = [rng.choice(by_group[g], 2, replace=False) for g in picked]
            _take(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]), tickets, n, seen, taken[True], target)
        a, b = rng.choice(members, 4 * target), rng.choice(members, 4 * target)
        other = (tickets.group[a] != tickets.group[b]) & (tickets.known[a] | tickets.known[b])
        _take(a[other], b[other], tickets, n, seen, taken[False], target)
    count = min(len(taken[True][0]), len(taken[False][0]))
    t1 = np.array(taken[True][0][:count] + taken[False][0][:count], dtype=np.int64)
    t2 = np.array(taken[True][1][:count] + taken[False][1][:count], dtype=np.int64)
    order = rng.permutation(len(t1))
    t1, t2 = t1[order], t2[order]
    return pd.DataFrame({"text1": tickets.text[t1], "text2": tickets.text[t2], "label": _labels(t1, t2, tickets, grades),
                         "ticket1": t1, "ticket2": t2})


def _take(a: np.ndarray, b: np.ndarray, tickets: Tickets, n: int, seen: set[int], into: tuple[list[int], list[int]],
          target: int) -> None:
    """Append the pairs of distinct texts not seen before to `into`, up to `target`."""
    ok = tickets.norm[a] != tickets.norm[b]
    a, b = a[ok], b[ok]
    fresh = _unique_pairs(tickets.norm[a], tickets.norm[b], n, seen)
    room = target - len(into[0])
    into[0].extend(a[fresh][:room].tolist())
    into[1].extend(b[fresh][:room].tolist())


def ticket_table(members: np.ndarray, tickets: Tickets) -> pd.DataFrame:
    """The tickets of a split as retrieval and group training read them: text, group, and number where known."""
    frame = pd.DataFrame({"text": tickets.text[members], "group": tickets.frame["group"].astype(str).to_numpy()[members]})
    if "number" in tickets.frame.columns:
        frame.insert(0, "number", tickets.frame["number"].astype(str).to_numpy()[members])
    return frame


class PairBuilder:
    """The steps of `build_pairs` on one ticket table, sharing its random generator, vectors and notes."""

    def __init__(self, tickets: TicketTable, options: PairOptions, model=None):
        self.table, self.options, self.model = tickets, options, model
        self.data = Tickets(tickets.frame, linked=bool(tickets.linked_through))
        self.rng = np.random.default_rng(options.seed)
        self.grades = _grade_fields(tickets, options) if options.graded else None
        self.filtered = options.test_difficulty == "hard"
        # Pairs wanted per label (similar, and as many dissimilar).
        self.wanted = {"train": 3 * options.pairs_per_phase // 2, "eval": options.eval_pairs // 2,
                       "test": options.test_pairs // 2}
        self.notes = list(tickets.notes)
        self.info: dict[str, dict[str, int]] = {}
        self.thresholds: dict[float, float] = {}
        self.members: dict[str, np.ndarray] = {}

    def _hard(self, name: str) -> bool:
        return name != "train" and self.filtered

    def choose(self) -> dict[str, np.ndarray]:
        """Split the tickets, then choose per split the tickets its pairs will need (train first)."""
        split, units, self.mode = split_tickets(self.data, self.options, self.rng)
        uses = max(2, self.options.max_pairs_per_ticket * 2 // 3)
        chosen: dict[str, np.ndarray] = {}
        for name in ("train", "test", "eval"):
            members = self.members[name] = np.flatnonzero(split == SPLITS.index(name))
            info = self.info[name] = {"tickets": int(len(members)), "groups": int(len(np.unique(self.data.group[members])))}
            if name != "train":
                # A ticket copied (nearly) word for word from a train ticket would test recall, not generalisation.
                scores = near_duplicate_scores(self.data.text[members], self.data.text[chosen["train"]])
                info["left_out_near_duplicates"] = int((scores >= self.options.near_duplicate).sum())
                members = members[scores < self.options.near_duplicate]
            self.members[name] = members
            pool = FILTERED_POOL if self._hard(name) else TRAIN_POOL
            chosen[name] = _choose(members, units, max(MIN_TICKETS, math.ceil(4 * self.wanted[name] * pool / uses)),
                                   self.rng)
            info["tickets_chosen"] = int(len(chosen[name]))
        return chosen

    def score(self, chosen: dict[str, np.ndarray]) -> None:
        """Encode every chosen ticket once."""
        self.everything = np.concatenate([chosen[name] for name in ("train", "eval", "test")])
        texts = self.data.text[self.everything].tolist()
        self.matrix = text_matrix(texts, self.options.difficulty, self.options.model if self.model is None else self.model)
        # Eval/test pairs are mined and judged lexically, never by the model they will judge.
        self.lexical = self.matrix if self.options.difficulty == "tfidf" else tfidf_vectors(texts)
        self.row_of = np.full(len(self.data), -1, dtype=np.int64)
        self.row_of[self.everything] = np.arange(len(self.everything))
        self.block = max(50, len(chosen["test"]))

    def pairs(self, name: str, chosen: np.ndarray) -> pd.DataFrame:
        """Candidates among `chosen`, scored, filtered (eval/test), selected with balance and the per-ticket cap."""
        data, options = self.data, self.options
        mining = self.matrix if name == "train" else self.lexical
        neighbours = _neighbours(chosen, data, mining, self.row_of, self.block, self.rng)
        pool = math.ceil(self.wanted[name] * (FILTERED_CANDIDATES if self._hard(name) else TRAIN_POOL))
        t1, t2 = _candidates(chosen, data, neighbours, pool, pool, self.rng)
        labels = _labels(t1, t2, data, self.grades)
        sim = row_similarity(self.matrix, self.row_of[t1], self.row_of[t2])
        difficulty = pair_difficulty(labels, sim)
        lexical = difficulty if self.lexical is self.matrix else \
            pair_difficulty(labels, row_similarity(self.lexical, self.row_of[t1], self.row_of[t2]))
        keep = lexical >= np.array([self.thresholds.get(float(x), -np.inf) for x in labels]) if self._hard(name) \
            else np.ones(len(t1), dtype=bool)
        picked = _select(t1, t2, data.group[t1] == data.group[t2], keep, self.wanted[name],
                         options.max_pairs_per_ticket, len(data), self.rng)
        frame = _frame(t1[picked], t2[picked], labels[picked], sim[picked], difficulty[picked], lexical[picked], data)
        if len(frame) < 2:
            raise UserError(f"the {name} split yields no balanced pairs ({len(chosen)} tickets); add tickets"
                            + (" or pass --test-difficulty all" if self._hard(name) else ""))
        self._note_shortfall(name, len(frame) // 2)
        if name == "train":
            frame["phase"] = difficulty_terciles(frame["label"].to_numpy(), frame["difficulty"].to_numpy(), self.rng)
            upper_third = frame.groupby("label")["lexical_difficulty"].quantile(2 / 3)
            self.thresholds = {float(k): float(v) for k, v in upper_third.items()}
            if options.hard_negatives:
                frame["negative"] = _hard_negatives(frame, neighbours, data)
            frame = pd.concat([frame[frame["phase"] == p].sample(frac=1.0, random_state=self.rng) for p in PHASES],
                              ignore_index=True)
        else:
            frame = frame.sample(frac=1.0, random_state=self.rng).reset_index(drop=True)
        used = np.concatenate([frame["ticket1"], frame["ticket2"]])
        self.info[name].update(tickets_in_pairs=int(len(np.unique(used))), pairs=int(len(frame)),
                               most_pairs_per_ticket=int(np.bincount(used).max()))
        return frame

    def _note_shortfall(self, name: str, got: int) -> None:
        if got >= self.wanted[name]:
            return
        size = f"{2 * got // 3} pairs per phase instead of {self.options.pairs_per_phase}" if name == "train" \
            else f"{2 * got} pairs instead of {2 * self.wanted[name]}"
        where = "at the hard third's lexical difficulty " if self._hard(name) else ""
        remedy = "add tickets, raise --max-pairs-per-ticket" + (" or pass --test-difficulty all" if where else "")
        self.notes.append(f"{name}: {size}: the {name} split's tickets allow no more balanced pairs {where}with at most "
                          f"{self.options.max_pairs_per_ticket} pairs per ticket ({remedy})")

    def datacard(self, sets: dict[str, pd.DataFrame], representative: pd.DataFrame,
                 tickets: dict[str, pd.DataFrame]) -> dict[str, Any]:
        options = self.options
        model = options.difficulty == "model"
        return {
            "tickettune": _version(),
            "command": None,
            "seed": options.seed,
            "source": self.table.provenance(),
            "tickets": int(len(self.data)), "groups": self.data.n_groups, "groups_with_two_or_more": self.data.n_multi,
            "split_unit": self.mode,
            "options": asdict(options),
            "difficulty": {"method": options.difficulty, "model": options.model if model else None,
                           "max_seq_length": DIFFICULTY_MAX_SEQ if model else None,
                           "tickets_encoded": int(len(self.everything)), "definition": DIFFICULTY_DEFINITION},
            "labels": {"graded": self.grades} if self.grades else {"binary": "1 = same group, 0 = different groups"},
            "hard_threshold": {str(k): round(v, 4) for k, v in sorted(self.thresholds.items())} if self.filtered else None,
            "hard_threshold_definition": "eval/test pairs are at least this hard by TF-IDF, per label (the upper third "
                                         "of train pairs); their candidates are mined by TF-IDF, not by the model",
            "splits": {name: {**self.info[name], "tickets_written": int(len(tickets[name]))}
                       for name in ("train", "eval", "test")},
            "pairs": [row for name in ("train", "eval", "test") for row in _stats(sets[name], name)],
            "representative_test_pairs": {"pairs": int(len(representative)),
                                          "similar": int((representative["label"] >= SIMILAR).sum()),
                                          "definition": "similar pairs drawn uniformly among same-group test pairs, "
                                                        "dissimilar uniformly among different-group ones; none mined"},
            "notes": self.notes,
        }


def build_pairs(tickets: TicketTable | pd.DataFrame, options: PairOptions | None = None, model=None) -> PairSet:
    """Train (with phases), eval, hard test and representative test pairs, and each split's tickets, from
    `tickets.read_tickets`'s table (or a DataFrame with `text` and `group` columns).

    `model` is a loaded SentenceTransformer, a model name or folder, or None for `options.model`; it is
    not used with `difficulty="tfidf"`.

        >>> from tickettune.data.pairs import PairOptions, build_pairs, write_pair_dir
        >>> from tickettune.data.tickets import read_tickets
        >>> tickets = read_tickets("incidents.csv", group_by="problem_id")                 # doctest: +SKIP
        >>> pairset = build_pairs(tickets, PairOptions(seed=0, difficulty="tfidf"))        # doctest: +SKIP
        >>> sorted(pairset.tickets), len(pairset.representative)                           # doctest: +SKIP
        (['eval', 'test', 'train'], 1000)
        >>> write_pair_dir(pairset, "pairs/")                                              # doctest: +SKIP
    """
    table = TicketTable(tickets) if isinstance(tickets, pd.DataFrame) else tickets
    builder = PairBuilder(table, options or PairOptions(), model)
    chosen = builder.choose()
    builder.score(chosen)
    # Train first: its hard phase sets the difficulty that eval and test are drawn at.
    sets = {name: builder.pairs(name, chosen[name]) for name in ("train", "test", "eval")}
    representative = representative_pairs(builder.members["test"], builder.data, builder.options.test_pairs,
                                          builder.options.seed, builder.grades)
    _check_no_leakage({**sets, "test": pd.concat([sets["test"], representative], ignore_index=True)})
    tickets = {name: ticket_table(builder.members[name], builder.data) for name in SPLITS}
    return PairSet(sets["train"], sets["eval"], sets["test"], builder.datacard(sets, representative, tickets),
                   representative, tickets)


def _version() -> str:
    from tickettune import __version__

    return __version__


def _check_no_leakage(sets: dict[str, pd.DataFrame]) -> None:
    """The split's promise, checked on the result: no ticket and no normalised text in two sets."""
    seen: dict[str, str] = {}
    for name, frame in sets.items():
        texts = set(frame["text1"]) | set(frame["text2"]) | set(frame.get("negative", pd.Series(dtype=object)).dropna())
        for text in {normalise_text(t) for t in texts}:
            if seen.setdefault(text, name) != name:
                raise RuntimeError(f"internal error: a text is in both {seen[text]} and {name}; please report it")


def write_pair_dir(pairset: PairSet, out: str | Path, overwrite: bool = False, command: str | None = None) -> Path:
    """Write train.jsonl (with phases), eval.jsonl, test.jsonl (the hard pairs), test_representative.jsonl,
    each split's tickets (train_tickets.jsonl, ...) and datacard.json into `out`, atomically."""
    from tickettune.core.jsonio import write_json
    from tickettune.data.pairs_io import PAIR_FILES, REPRESENTATIVE_FILE, TICKET_FILES, write_pairs, write_tickets

    out = Path(out)
    files = {**PAIR_FILES, **({} if pairset.representative is None else {"representative": REPRESENTATIVE_FILE}),
             **{f"{name}_tickets": TICKET_FILES[name] for name in pairset.tickets}}
    datacard = {**pairset.datacard, "command": command, "files": files}
    with atomic_output_dir(out, overwrite) as tmp:
        for role, frame in (("train", pairset.train), ("eval", pairset.eval), ("test", pairset.test)):
            write_pairs(frame, tmp / PAIR_FILES[role])
        if pairset.representative is not None:
            write_pairs(pairset.representative, tmp / REPRESENTATIVE_FILE)
        for name, frame in pairset.tickets.items():
            write_tickets(frame, tmp / TICKET_FILES[name])
        write_json(tmp / "datacard.json", datacard)
    return out


def summary_tables(datacard: dict[str, Any]):
    """Rich tables of a data card: pairs and difficulty per phase and label, then tickets and groups per split."""
    from rich.table import Table

    pairs = Table(title=f"Pairs (difficulty: {datacard['difficulty']['method']}"
                        + (f", {datacard['difficulty']['model']}" if datacard["difficulty"]["model"] else "") + ")")
    for name in ("set", "phase"):
        pairs.add_column(name, justify="left")
    for name in ("label", "pairs", "mean similarity", "mean difficulty"):
        pairs.add_column(name, justify="right")
    for row in datacard["pairs"]:
        pairs.add_row(row["set"], row["phase"] if row["set"] == "train" else "-", f"{row['label']:g}", str(row["pairs"]),
                      f"{row['similarity_mean']:.4f}", f"{row['difficulty_mean']:.4f}")
    splits = Table(title=f"Splits (kept whole: {datacard['split_unit']}; seed {datacard['seed']})")
    columns = {"tickets": "tickets", "groups": "groups", "left_out_near_duplicates": "copies left out",
               "tickets_chosen": "chosen", "tickets_in_pairs": "in pairs", "pairs": "pairs",
               "most_pairs_per_ticket": "max per ticket"}
    splits.add_column("split")
    for title in columns.values():
        splits.add_column(title, justify="right")
    for name, info in datacard["splits"].items():
        splits.add_row(name, *[str(info.get(column, "-")) for column in columns])
    return [pairs, splits]
