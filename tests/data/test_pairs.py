"""The incident sample, curriculum pairs (split, balance, phases, determinism) and `tickettune check`."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tickettune.cli import main
from tickettune.core.errors import UserError
from tickettune.core.similarity import pair_difficulty
from tickettune.core.textio import normalise_text
from tickettune.data.check import load_sets, run_checks
from tickettune.data.pairs import PairOptions, build_pairs, write_pair_dir
from tickettune.data.pairs_io import read_pairs
from tickettune.data.sample import FIELDS, generate_sample, write_sample
from tickettune.data.tickets import TicketTable, read_tickets

SMALL = {"pairs_per_phase": 120, "eval_pairs": 60, "test_pairs": 60, "difficulty": "tfidf"}


@pytest.fixture(scope="module")
def sample_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "incidents.csv"
    write_sample(generate_sample(500, seed=3), path)
    return path


@pytest.fixture(scope="module")
def tickets(sample_csv) -> TicketTable:
    return read_tickets(sample_csv, group_by="problem_id")


@pytest.fixture(scope="module")
def pairset(tickets):
    return build_pairs(tickets, PairOptions(**SMALL, hard_negatives=True))


def test_sample_is_deterministic_realistic_and_marked_synthetic():
    frame = generate_sample(300, seed=1)
    assert frame.equals(generate_sample(300, seed=1))
    assert not frame.equals(generate_sample(300, seed=2))
    assert list(frame.columns) == list(FIELDS) and len(frame) == 300
    assert frame["u_data_source"].str.startswith("SYNTHETIC").all()
    assert frame["number"].is_unique and (frame["opened_at"].sort_values().to_numpy() == frame["opened_at"]).all()
    resolved = frame[frame["resolved_at"] != ""]
    assert (resolved["resolved_at"] > resolved["opened_at"]).all()
    problems = frame[frame["problem_id"] != ""]
    # A problem's incidents are written in different words ...
    assert problems.groupby("problem_id")["short_description"].nunique().max() >= 4
    # ... and other problems on the same configuration item are the near misses.
    per_ci = problems.groupby("cmdb_ci")["problem_id"].nunique()
    assert (per_ci >= 2).sum() >= 10
    children = frame[(frame["parent_incident"] != "") & (frame["problem_id"] == "")]
    assert len(children) > 10 and children["parent_incident"].isin(frame["number"]).all()
    assert (frame["description"] == "").mean() > 0.05


def test_sample_files_in_every_layout_read_back(tmp_path):
    frame = generate_sample(60, seed=0)
    for name, labels in (("a.csv", True), ("b.json", False), ("c.xlsx", True)):
        write_sample(frame, tmp_path / name, labels=labels)
        back = read_tickets(tmp_path / name).frame
        assert len(back) == 60 and back["text"].str.len().min() > 0
    with pytest.raises(UserError, match="already exists"):
        write_sample(frame, tmp_path / "a.csv")
    with pytest.raises(UserError, match="unknown sample format"):
        write_sample(frame, tmp_path / "a.parquet")


def test_no_ticket_or_text_in_two_splits(pairset, tickets):
    sets = {"train": pairset.train, "eval": pairset.eval, "test": pairset.test}
    ids = {name: set(f["ticket1"]) | set(f["ticket2"]) for name, f in sets.items()}
    texts = {name: {normalise_text(t) for t in pd.concat([f["text1"], f["text2"]])} for name, f in sets.items()}
    for a, b in (("train", "eval"), ("train", "test"), ("eval", "test")):
        assert not ids[a] & ids[b] and not texts[a] & texts[b]
    # Split by problem: test problems are unseen in training.
    group = tickets.frame["group"].to_numpy()
    assert pairset.datacard["split_unit"] == "group"
    assert not {group[i] for i in ids["train"]} & {group[i] for i in ids["test"]}
    for name in ("eval", "test"):  # no single large problem fills a split
        similar = sets[name][sets[name]["label"] == 1]
        assert len({group[i] for i in similar["ticket1"]}) >= 3


def test_balanced_phases_rise_in_difficulty_and_test_is_hard(pairset):
    train = pairset.train
    assert list(train["phase"].drop_duplicates()) == ["easy", "medium", "hard"]
    for _, phase in train.groupby("phase"):
        assert (phase["label"] == 1).sum() == (phase["label"] == 0).sum() > 0
    means = train.groupby(["label", "phase"])["difficulty"].mean()
    for label in (0.0, 1.0):
        assert means[(label, "easy")] < means[(label, "medium")] < means[(label, "hard")]
    # Eval/test are filtered lexically (never by the model they judge): at least the upper third of train pairs.
    hard = train.groupby("label")["lexical_difficulty"].quantile(2 / 3)
    assert pairset.datacard["hard_threshold"] == {str(k): round(v, 4) for k, v in hard.items()}
    for frame in (pairset.test, pairset.eval):
        assert (frame["label"] == 1).sum() == (frame["label"] == 0).sum()
        assert (frame["lexical_difficulty"] >= frame["label"].map(hard)).all()
    everything = pd.concat([pairset.train, pairset.eval, pairset.test])
    uses = pd.concat([everything["ticket1"], everything["ticket2"]]).value_counts()
    assert uses.max() <= PairOptions().max_pairs_per_ticket
    assert np.allclose(train["difficulty"], pair_difficulty(train["label"], train["similarity"]))


def test_hard_negatives_come_from_other_train_groups(pairset, tickets):
    train = pairset.train
    similar = train[train["label"] == 1]
    assert similar["negative"].notna().mean() > 0.9 and train.loc[train["label"] == 0, "negative"].isna().all()
    group_of = dict(zip(tickets.frame["text"], tickets.frame["group"]))
    rows = similar.dropna(subset=["negative"])
    assert all(group_of[n] != group_of[a] for n, a in zip(rows["negative"], rows["text1"]))
    held_out = {normalise_text(t) for f in (pairset.eval, pairset.test) for t in pd.concat([f["text1"], f["text2"]])}
    assert not {normalise_text(t) for t in rows["negative"]} & held_out


def test_identical_and_near_identical_texts_stay_in_one_split():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    rows = [{"text": " ".join(rng.choice(words, 8)), "group": f"g{g}"} for g in range(40) for _ in range(4)]
    # Near-copies of one ticket: whichever split holds the original, copies in eval/test are left out.
    rows += [{"text": "printer on floor two jams on every job " + "again " * k, "group": f"g{k}"} for k in range(30)]
    # The same text in many tickets and groups (case and spacing differ) must not cross splits.
    rows += [{"text": "  VPN   Not connecting " if k % 2 else "vpn not CONNECTING", "group": f"g{k}"} for k in range(12)]
    frame = pd.DataFrame(rows)
    result = build_pairs(frame, PairOptions(pairs_per_phase=30, eval_pairs=10, test_pairs=10, difficulty="tfidf",
                                            test_difficulty="all", split_by="ticket"))
    where = {name for name, f in (("train", result.train), ("eval", result.eval), ("test", result.test))
             if pd.concat([f["text1"], f["text2"]]).map(normalise_text).eq("vpn not connecting").any()}
    assert len(where) <= 1
    assert sum(s.get("left_out_near_duplicates", 0) for s in result.datacard["splits"].values()) > 0


def test_the_same_texts_in_other_tickets_make_no_second_pair():
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(300)]
    rows = [{"text": " ".join(rng.choice(words, 8)), "group": f"g{g}"} for g in range(10) for _ in range(6)]
    rows += [{"text": "VPN not connecting", "group": "g0"} for _ in range(30)]
    result = build_pairs(pd.DataFrame(rows), PairOptions(pairs_per_phase=60, eval_pairs=10, test_pairs=10,
                                                         difficulty="tfidf", test_difficulty="all"))
    for frame in (result.train, result.eval, result.test):
        keys = [tuple(sorted((normalise_text(a), normalise_text(b)))) for a, b in zip(frame["text1"], frame["text2"])]
        assert len(keys) == len(set(keys))


def _frames(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_same_command_same_seed_same_bytes(sample_csv, tmp_path, capsys):
    args = ["pairs", str(sample_csv), "--group-by", "problem_id", "--difficulty", "tfidf", "--pairs-per-phase", "90",
            "--eval-pairs", "40", "--test-pairs", "40", "--hard-negatives"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    assert main([*args, "--seed", "1", "-o", str(tmp_path / "c")]) == 0
    a, b, c = (_frames(tmp_path / x) for x in "abc")
    for name in ("train.jsonl", "eval.jsonl", "test.jsonl"):
        assert a[name] == b[name]
        assert a[name] != c[name]
    card = json.loads(a["datacard.json"])
    assert card["command"].startswith("tickettune pairs ") and "--pairs-per-phase 90" in card["command"]
    assert card["seed"] == 0 and json.loads(c["datacard.json"])["seed"] == 1
    train = read_pairs(tmp_path / "a" / "train.jsonl")
    assert set(train.columns) == {"text1", "text2", "label", "phase", "negative"}
    assert "Pairs" in capsys.readouterr().out
    assert main([*args, "-o", str(tmp_path / "a")]) == 2  # refuses to overwrite without --overwrite


def test_model_difficulty_with_a_tiny_model(tickets, tiny_model):
    result = build_pairs(tickets, PairOptions(pairs_per_phase=60, eval_pairs=30, test_pairs=30, model=str(tiny_model)))
    means = result.train.groupby(["label", "phase"])["similarity"].mean()
    assert means[(1.0, "easy")] > means[(1.0, "hard")] and means[(0.0, "easy")] < means[(0.0, "hard")]
    assert result.datacard["difficulty"]["tickets_encoded"] <= len(tickets)


def test_graded_labels(tickets):
    result = build_pairs(tickets, PairOptions(**SMALL, graded=True))
    labels = set(result.train["label"])
    assert labels <= {0.0, 0.3, 0.6, 1.0} and {0.0, 1.0} <= labels and labels & {0.3, 0.6}
    custom = build_pairs(tickets, PairOptions(**SMALL, graded=True, grade_weights={"problem_id": 0.9, "cmdb_ci": 0.5}))
    assert set(custom.train["label"]) <= {0.0, 0.5, 0.9}
    with pytest.raises(UserError, match="not a column"):
        build_pairs(tickets, PairOptions(**SMALL, graded=True, grade_weights={"sub_category": 0.5}))


def test_too_few_groups_and_tickets_are_user_errors(tickets):
    one_group = pd.DataFrame({"text": [f"text {i}" for i in range(20)], "group": "A"})
    with pytest.raises(UserError, match="one group"):
        build_pairs(one_group, PairOptions(difficulty="tfidf"))
    few = pd.DataFrame({"text": [f"text {i} about {g}" for g in "ABC" for i in range(3)], "group": [g for g in "ABC"
                                                                                                    for _ in range(3)]})
    with pytest.raises(UserError, match="too few groups"):
        build_pairs(few, PairOptions(difficulty="tfidf", split_by="group"))
    with pytest.raises(UserError, match="pairs_per_phase"):
        PairOptions(pairs_per_phase=0)
    with pytest.raises(UserError, match="difficulty"):
        PairOptions(difficulty="bert")


def test_too_few_tickets_clamps_and_says_so(tickets):
    few = replace(tickets, frame=tickets.frame.head(200))
    result = build_pairs(few, PairOptions(pairs_per_phase=2000, eval_pairs=500, test_pairs=500, difficulty="tfidf"))
    assert 0 < len(result.train) < 6000
    assert any("pairs per phase instead of 2000" in note for note in result.datacard["notes"])


def test_check_passes_on_built_pairs_and_catches_problems(pairset, tmp_path, capsys):
    good = write_pair_dir(pairset, tmp_path / "good")
    sets, card = load_sets([good])
    assert card["difficulty"]["method"] == "tfidf"
    findings = run_checks(sets, "tfidf")
    assert all(f.status != "FAIL" for f in findings), findings
    assert main(["check", str(good)]) == 0

    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    train = read_pairs(bad / "train.jsonl")
    test = read_pairs(bad / "test.jsonl")
    test.loc[0, "text1"] = train.loc[0, "text1"].upper()  # leaked, differently cased
    test.loc[1, "text1"] = train.loc[1, "text1"] + " thanks"  # near-duplicate
    train["phase"] = train["phase"].map({"easy": "hard", "hard": "easy", "medium": "medium"})  # regressive
    train = pd.concat([train, train.head(3)])  # duplicate pairs
    from tickettune.data.pairs_io import write_pairs

    write_pairs(train, bad / "train.jsonl")
    write_pairs(test, bad / "test.jsonl")
    failed = {f.check for f in run_checks(load_sets([bad])[0], "tfidf") if f.status == "FAIL"}
    assert {"no test text in train", "no near-duplicate of train in test", "no duplicate pairs: train",
            "difficulty rises: similar pairs", "difficulty rises: dissimilar pairs"} <= failed
    capsys.readouterr()
    assert main(["check", str(bad / "train.jsonl"), str(bad / "test.jsonl"), "--difficulty", "none"]) == 1
    assert "no test text in train" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "missing")]) == 2


def test_table_sha256_follows_the_rows_and_their_order_not_the_index():
    from tickettune.core.textio import table_sha256

    frame = pd.DataFrame({"text1": ["a", "b"], "text2": ["c", "d"], "label": [1.0, 0.0]})
    assert table_sha256(frame) == table_sha256(frame.set_axis([7, 9]))
    assert table_sha256(frame) != table_sha256(frame.iloc[::-1])
    assert table_sha256(frame) != table_sha256(frame.assign(label=[1.0, 0.5]))
