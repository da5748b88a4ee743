"""What a run trains on and is judged on: pairs (with curriculum phases), and a split's tickets.

`load_pairs(DIR)` reads a directory made by `tickettune pairs`: its train/eval/test pairs, its representative
test pairs and each split's tickets. `pairs_from_tickets(FILE, ...)` makes the same in memory from a ticket
export. Phases of train pairs are kept, made one, or assigned by the untuned model's difficulty.

    >>> from tickettune.training.dataset import load_pairs
    >>> pairs = load_pairs("pairs/")          # doctest: +SKIP
    >>> pairs.test_sets().pairs.keys()        # doctest: +SKIP
    dict_keys(['representative', 'hard'])
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tickettune.core.errors import UserError
from tickettune.core.similarity import pair_scores
from tickettune.data import leakage
from tickettune.data.pairs_io import PHASES, pair_file, read_pair_dir_extras, read_pairs
from tickettune.evaluation.judge import TestSets
from tickettune.training.config import PHASE_MODES, TrainConfig, trains_on_tickets

SINGLE_PHASE = "all"


@dataclass
class TrainingData:
    """Train pairs (with a `phase` column once phases are assigned), eval pairs and test pairs, and where they came from.

    A directory made by `tickettune pairs` also gives the representative test pairs and each split's tickets
    (text, group): train tickets for the group losses, eval tickets for retrieval during training, test
    tickets for retrieval at the end. `test_name` says what the test pairs are ("hard" from `pairs`).
    """

    train: pd.DataFrame
    eval: pd.DataFrame
    test: pd.DataFrame
    source: str = ""
    test_name: str = "test"
    representative: pd.DataFrame | None = None
    tickets: dict[str, pd.DataFrame] = field(default_factory=dict)
    probes: dict[str, pd.DataFrame] = field(default_factory=dict)  # same-problem probes judged at the end (probes.py)
    # `train --feedback`: the held-out verdicts (a pair set judged like the others) and what was used.
    feedback: pd.DataFrame | None = None
    feedback_note: str = ""
    feedback_train: pd.DataFrame | None = None  # the verdicts trained on (also among `train`): the head's pair term

    def test_sets(self) -> TestSets:
        pairs = {self.test_name: self.test}
        if self.representative is not None:
            pairs["representative"] = self.representative
        if self.feedback is not None:
            pairs["feedback"] = self.feedback
        return TestSets(self.tickets.get("test"), pairs, self.probes)

    def masked(self) -> "TrainingData":
        """A copy with personal data masked in every text (pii.mask_pii)."""
        from tickettune.data.pii import mask_pair_texts

        return replace(self, train=mask_pair_texts(self.train), eval=mask_pair_texts(self.eval),
                       test=mask_pair_texts(self.test),
                       representative=None if self.representative is None else mask_pair_texts(self.representative),
                       feedback=None if self.feedback is None else mask_pair_texts(self.feedback),
                       feedback_train=None if self.feedback_train is None else mask_pair_texts(self.feedback_train),
                       tickets={k: mask_pair_texts(v) for k, v in self.tickets.items()},
                       probes={k: mask_pair_texts(v) for k, v in self.probes.items()})


def eval_tickets(pairs: TrainingData, config: TrainConfig) -> pd.DataFrame | None:
    """The eval tickets each epoch searches: a seeded sample of config.eval_tickets (all when unset), or None."""
    tickets = pairs.tickets.get("eval")
    if tickets is None or config.eval_tickets is None or config.eval_tickets >= len(tickets):
        return tickets
    return tickets.iloc[np.sort(np.random.default_rng(config.seed).choice(len(tickets), config.eval_tickets,
                                                                          replace=False))]


def load_pairs(pairs_dir: str | Path | None = None, train_file: str | Path | None = None,
               eval_file: str | Path | None = None, test_file: str | Path | None = None) -> TrainingData:
    """A directory made by `tickettune pairs`, or three pair files in any format pairs_io reads."""
    files: tuple[str | Path | None, ...] = (train_file, eval_file, test_file)
    if pairs_dir is not None and any(f is not None for f in files):
        raise UserError("pass either --pairs DIR or --train/--eval/--test files, not both")
    if pairs_dir is not None:
        if not Path(pairs_dir).is_dir():
            raise UserError(f"{pairs_dir} is not a directory; pass the folder `tickettune pairs` wrote, or --train/--eval/--test")
        files = tuple(pair_file(pairs_dir, role) for role in ("train", "eval", "test"))
    missing = [flag for flag, f in zip(("--train", "--eval", "--test"), files) if f is None]
    if len(missing) == 3:
        raise UserError("no training pairs given; pass --pairs DIR or --train FILE --eval FILE --test FILE")
    if missing:
        raise UserError(f"missing {', '.join(missing)}: training needs train, eval and test pairs (or --pairs DIR)")
    train, eval_, test = (read_pairs(f) for f in files if f is not None)
    pairs = TrainingData(train, eval_, test, source=str(pairs_dir or files[0]))
    if pairs_dir is None:
        return pairs
    folder = Path(pairs_dir)
    representative, tickets, test_name = read_pair_dir_extras(folder)
    return replace(pairs, representative=representative, tickets=tickets, test_name=test_name)


def pairs_from_tickets(path: str | Path, group_by: str | None, text_columns: list[str] | None,
                       config: TrainConfig):
    """`train --tickets`: the split, held-out tickets and test pairs `tickettune pairs` would make (its defaults,
    config.seed), as TrainingData and the PairSet to write beside the run. Group losses need no model-scored
    curriculum pairs, so their pairs' difficulty is lexical (TF-IDF) and no model is loaded for it."""
    from tickettune.data.pairs import PairOptions, build_pairs
    from tickettune.data.tickets import read_tickets

    table = read_tickets(path, text_columns, group_by, mask_pii=config.mask_pii)
    options = PairOptions(seed=config.seed, model=config.model_name,
                          difficulty="tfidf" if trains_on_tickets(config) else "model")
    pairset = build_pairs(table, options)
    return from_pairset(pairset, str(path)), pairset


def from_pairset(pairset, source: str) -> TrainingData:
    """TrainingData from a `pairs.PairSet` made in memory: its test pairs are the hard ones."""
    return TrainingData(pairset.train, pairset.eval, pairset.test, source, "hard", pairset.representative,
                         pairset.tickets)


def difficulty_phases(pairs: pd.DataFrame, model, seed: int) -> np.ndarray:
    """easy/medium/hard as `tickettune pairs` assigns them: terciles of the base model's difficulty within each label."""
    from tickettune.data.pairs import difficulty_terciles, pair_difficulty

    labels = pairs["label"].to_numpy(float)
    return difficulty_terciles(labels, pair_difficulty(labels, pair_scores(model, pairs)), np.random.default_rng(seed))


def check_phase_mode(mode: str) -> str:
    """`mode` if it is one of PHASE_MODES, checked before anything loads; else a UserError naming them."""
    if mode not in PHASE_MODES:
        raise UserError(f"--phases {mode!r} is not one of {', '.join(PHASE_MODES)}")
    return mode


def assign_phases(pairs: pd.DataFrame, mode: str, model=None, seed: int = 0) -> pd.DataFrame:
    """Keep the file's phases (`keep`; one phase when it has none), use one phase, or split by difficulty."""
    check_phase_mode(mode)
    pairs = pairs.copy()
    if mode == "difficulty":
        pairs["phase"] = difficulty_phases(pairs, model, seed)
    elif mode == "single" or "phase" not in pairs:
        pairs["phase"] = SINGLE_PHASE
    return pairs


def phase_epochs(pairs: pd.DataFrame, config: TrainConfig) -> dict[str, float]:
    """Epochs of each phase present, in curriculum order; phase_epochs gives one number per phase."""
    present = set(pairs["phase"])
    if present == {SINGLE_PHASE}:
        return {SINGLE_PHASE: config.phase_epochs[0]}
    epochs = config.phase_epochs
    if len(epochs) > len(PHASES):
        raise UserError(f"phase_epochs lists {len(epochs)} numbers but there are {len(PHASES)} phases "
                        f"({', '.join(PHASES)}); give one number per phase")
    out = {}
    for index, name in enumerate(PHASES):
        if name in present and index >= len(epochs):
            raise UserError(f"the train pairs have phase '{name}' but phase_epochs lists only {len(epochs)} "
                            f"number(s); give one per phase, e.g. --set phase_epochs=[2,2,2]")
        if index < len(epochs) and epochs[index] > 0:
            if name not in present:
                raise UserError(f"phase '{name}' has no training pairs but phase_epochs gives it {epochs[index]:g} "
                                f"epochs; rebuild the pairs or set its epochs to 0 (e.g. --set phase_epochs=...)")
            out[name] = epochs[index]
    return out


def refuse_test_texts_in_training(pairs: TrainingData, action: str = "train") -> None:
    """Refuse test texts (pairs and tickets) that also occur in the training pairs or tickets (compared case- and
    space-insensitively)."""
    training = leakage.fingerprints(pairs.train) | leakage.fingerprints(pairs.tickets.get("train", pd.DataFrame()))
    # Held-out feedback is left out: its suggestions are indexed tickets, which may well be training tickets.
    leakage.refuse_leaked_texts(training, pd.concat(replace(pairs, feedback=None).test_sets().frames()), action)
