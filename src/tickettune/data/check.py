"""`tickettune check`: verify pair files before training on them.

The guide's "verify curriculum pairs are actually progressive", and more: mean difficulty rises
from phase to phase for each label; labels are balanced; no pair is listed twice; no test text
appears in the training pairs (exactly after folding case and whitespace, or as a near-duplicate);
no text is empty or longer than a model reads. Each check gives PASS, WARN or FAIL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tickettune.core.errors import UserError
from tickettune.core.models import DEFAULT_MODEL
from tickettune.core.similarity import SIMILAR, near_duplicate_scores, pair_difficulty, row_similarity, text_matrix
from tickettune.core.textio import normalise_text
from tickettune.data.pairs import PairOptions
from tickettune.data.pairs_io import PAIR_FILES, PHASES, read_pairs

ROLE_WORDS = {"test": ("test",), "eval": ("eval", "dev", "val")}
BALANCE = (0.4, 0.6)


@dataclass
class Finding:
    """One line of the findings table: `status` is PASS, WARN or FAIL."""

    check: str
    status: str
    detail: str


def _role(path: Path) -> str:
    name = path.name.lower()
    return next((role for role, words in ROLE_WORDS.items() if any(w in name for w in words)), "train")


def load_sets(paths: Sequence[str | Path]) -> tuple[dict[str, pd.DataFrame], dict | None]:
    """Pair tables by role (train/eval/test) from directories made by `tickettune pairs` or from pair files.

    A file's role comes from its name (`fixed_test_pairs.json` is test, `dev`/`eval`/`val` is eval, the
    rest is train, and several train files are joined). Also returns a directory's datacard, if any.
    """
    parts: dict[str, list[pd.DataFrame]] = {}
    datacard = None
    for path in map(Path, paths):
        if path.is_dir():
            found = {role: path / name for role, name in PAIR_FILES.items() if (path / name).is_file()}
            if not found:
                raise UserError(f"{path} holds none of {', '.join(PAIR_FILES.values())}; pass a directory made by "
                                "`tickettune pairs` or the pair files themselves")
            card = path / "datacard.json"
            if card.is_file():
                try:
                    datacard = json.loads(card.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise UserError(f"{card} is not valid JSON; rebuild the directory with `tickettune pairs`") from None
        else:
            found = {_role(path): path}
        for role, file in found.items():
            parts.setdefault(role, []).append(read_pairs(file))
    return {role: pd.concat(frames, ignore_index=True) for role, frames in parts.items()}, datacard


def _texts(frame: pd.DataFrame) -> list[str]:
    columns = [c for c in ("text1", "text2", "negative") if c in frame.columns]
    return sorted(set(pd.concat([frame[c] for c in columns]).dropna().astype(str)))


def _example(texts: Sequence[str]) -> str:
    text = " ".join(str(texts[0]).split())
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _similar_share(frame: pd.DataFrame) -> float:
    return float((frame["label"] >= SIMILAR).mean())


def _groups(sets: dict[str, pd.DataFrame]) -> list[tuple[str, pd.DataFrame]]:
    """Train per phase (or whole), then eval and test."""
    out = []
    train = sets.get("train")
    if train is not None:
        out += [(f"train {p}", train[train["phase"] == p]) for p in PHASES] if "phase" in train.columns \
            else [("train", train)]
    return out + [(role, sets[role]) for role in ("eval", "test") if role in sets]


def check_phases(sets: dict[str, pd.DataFrame]) -> list[Finding]:
    train = sets.get("train")
    if train is None:
        return [Finding("curriculum phases", "WARN", "no train pairs given; only the test/eval checks ran")]
    if "phase" not in train.columns:
        return [Finding("curriculum phases", "WARN", "train pairs have no phase column; nothing to check for progression")]
    counts = train["phase"].value_counts()
    missing = [p for p in PHASES if counts.get(p, 0) == 0]
    if missing:
        return [Finding("curriculum phases", "FAIL", f"no pairs in phase {', '.join(missing)}")]
    return [Finding("curriculum phases", "PASS", ", ".join(f"{p} {counts[p]}" for p in PHASES) + " pairs")]


def check_balance(sets: dict[str, pd.DataFrame]) -> list[Finding]:
    """Similar share (label >= 0.5) per phase and set; graded labels only warn, their balance is by design looser."""
    findings = []
    for name, frame in _groups(sets):
        if frame.empty:
            continue
        share = _similar_share(frame)
        graded = not frame["label"].isin((0.0, 1.0)).all()
        ok = BALANCE[0] <= share <= BALANCE[1]
        status = "PASS" if ok else ("WARN" if graded else "FAIL")
        findings.append(Finding(f"labels balanced: {name}", status, f"{share:.0%} similar of {len(frame)} pairs"
                                + ("" if ok else f" (expected {BALANCE[0]:.0%}-{BALANCE[1]:.0%})")))
    return findings


def check_duplicates(sets: dict[str, pd.DataFrame]) -> list[Finding]:
    findings = []
    for role, frame in sets.items():
        a, b = frame["text1"].map(normalise_text), frame["text2"].map(normalise_text)
        keys = pd.Series([(x, y) if x <= y else (y, x) for x, y in zip(a, b)])
        repeated = int(keys.duplicated().sum())
        findings.append(Finding(f"no duplicate pairs: {role}", "FAIL" if repeated else "PASS",
                                f"{repeated} pairs listed more than once" if repeated else f"{len(frame)} distinct pairs"))
    return findings


def leakage_findings(sets: dict[str, pd.DataFrame], near_duplicate: float) -> list[Finding]:
    """Texts of the test (FAIL) and eval (WARN) sets that also appear in the training pairs."""
    if "train" not in sets:
        return []
    train = _texts(sets["train"])
    seen = {normalise_text(t) for t in train}
    findings = []
    for role, status in (("test", "FAIL"), ("eval", "WARN")):
        if role not in sets:
            if role == "test":
                findings.append(Finding("no test text in train", "WARN", "no test pairs given"))
            continue
        texts = _texts(sets[role])
        shared = [t for t in texts if normalise_text(t) in seen]
        findings.append(Finding(f"no {role} text in train", status if shared else "PASS",
                                f"{len(shared)} of {len(texts)} {role} texts are in the train pairs, e.g. {_example(shared)}"
                                if shared else f"none of {len(texts)} {role} texts"))
        rest = [t for t in texts if normalise_text(t) not in seen]
        scores = near_duplicate_scores(rest, train)
        close = [t for t, s in zip(rest, scores) if s >= near_duplicate]
        findings.append(Finding(f"no near-duplicate of train in {role}", status if close else "PASS",
                                f"{len(close)} {role} texts have a train text with word-overlap cosine >= {near_duplicate:g}, "
                                f"e.g. {_example(close)}" if close else f"none at word-overlap cosine >= {near_duplicate:g}"))
    return findings


def check_lengths(sets: dict[str, pd.DataFrame], max_words: int) -> list[Finding]:
    texts = sorted({t for frame in sets.values() for t in _texts(frame)})
    empty = [t for t in texts if not t.strip()]
    long = [t for t in texts if len(t.split()) > max_words]
    findings = [Finding("no empty texts", "FAIL" if empty else "PASS", f"{len(empty)} empty texts" if empty
                        else f"{len(texts)} distinct texts")]
    findings.append(Finding("no over-long texts", "WARN" if long else "PASS",
                            f"{len(long)} texts longer than {max_words} words; models read only their start"
                            if long else f"all within {max_words} words"))
    return findings


def check_difficulty(sets: dict[str, pd.DataFrame], method: str, model) -> list[Finding]:
    """Mean difficulty (by `method`: the model's cosine or TF-IDF) rises easy -> medium -> hard for each label;
    the test set is about as hard as the hard phase."""
    train = sets.get("train")
    if train is None or "phase" not in train.columns:
        return []
    frames = {"train": train, **{r: sets[r] for r in ("test",) if r in sets}}
    texts = sorted({t for f in frames.values() for t in pd.concat([f["text1"], f["text2"]])})
    matrix = text_matrix(texts, method, model)
    row = {t: i for i, t in enumerate(texts)}
    means: dict[tuple[str, str], float] = {}
    for name, frame in frames.items():
        sim = row_similarity(matrix, frame["text1"].map(row).to_numpy(), frame["text2"].map(row).to_numpy())
        scored = frame.assign(difficulty=pair_difficulty(frame["label"].to_numpy(), sim),
                              kind=np.where(frame["label"] >= SIMILAR, "similar", "dissimilar"))
        keys = ["phase", "kind"] if name == "train" else ["kind"]
        for key, value in scored.groupby(keys)["difficulty"].mean().items():
            means[key if name == "train" else ("test", key)] = float(value)
    findings = []
    for kind in ("similar", "dissimilar"):
        known = [means.get((p, kind)) for p in PHASES]
        values = [v for v in known if v is not None]
        if len(values) < len(known):
            continue
        rising = all(a < b for a, b in zip(values, values[1:]))
        shown = " < ".join(f"{p} {v:.3f}" for p, v in zip(PHASES, values))
        findings.append(Finding(f"difficulty rises: {kind} pairs", "PASS" if rising else "FAIL",
                                f"mean {method} difficulty {shown}" if rising else f"mean {method} difficulty "
                                + ", ".join(f"{p} {v:.3f}" for p, v in zip(PHASES, values)) + " does not rise"))
        test = means.get(("test", kind))
        if test is not None:
            hard_enough = test > values[1]
            findings.append(Finding(f"test as hard as hard phase: {kind}", "PASS" if hard_enough else "WARN",
                                    f"test {test:.3f}, hard phase {values[2]:.3f}, medium {values[1]:.3f}"))
    return findings


def run_checks(sets: dict[str, pd.DataFrame], difficulty: str = "model", model=DEFAULT_MODEL,
               near_duplicate: float = PairOptions.near_duplicate, max_words: int = 512) -> list[Finding]:
    """Every check on pair tables by role; `difficulty` "model" scores with `model`, "tfidf" needs none, "none" skips."""
    if difficulty not in ("model", "tfidf", "none"):
        raise UserError(f"--difficulty {difficulty!r} is invalid; choose model, tfidf or none")
    if not sets:
        raise UserError("no pair files to check; pass a directory made by `tickettune pairs` or pair files")
    findings = check_phases(sets)
    if difficulty != "none":
        findings += check_difficulty(sets, difficulty, model)
    return findings + check_balance(sets) + check_duplicates(sets) + leakage_findings(sets, near_duplicate) \
        + check_lengths(sets, max_words)


def findings_table(findings: Sequence[Finding], title: str = "tickettune check"):
    from rich.markup import escape
    from rich.table import Table

    colours = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red"}
    table = Table(title=title)
    table.add_column("check")
    table.add_column("result")
    table.add_column("details")
    for finding in findings:
        table.add_row(escape(finding.check), f"[{colours[finding.status]}]{finding.status}[/]", escape(finding.detail))
    return table
