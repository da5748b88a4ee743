"""Feedback: one verdict per (query, suggestion, agent) in SQLite and PostgreSQL, its export as pairs, and what
`train --feedback` makes of them."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest
import torch

from tickettune.cli import main
from tickettune.core.errors import UserError
from tickettune.data.pairs_io import read_pairs
from tickettune.serving.feedback import FeedbackStore, Verdict, default_url
from tickettune.training.dataset import TrainingData
from tickettune.training.feedback_pairs import add_feedback, feedback_change, read_feedback, split_feedback
from tickettune.training.head import HeadObjective, fit_head

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def verdict(verdict: str, agent: str = "ana", **kw) -> Verdict:
    values = {"query_text": "VPN drops every hour", "suggested": "INC2", "suggested_text": "VPN disconnects hourly"}
    values.update(kw)
    return Verdict(verdict=verdict, agent=agent, **values)


def exercise(store: FeedbackStore) -> None:
    assert store.record(verdict("duplicate")) == "added"
    assert store.record(verdict("duplicate")) == "unchanged"
    assert store.record(verdict("unrelated")) == "updated"
    assert store.record(verdict("related", agent="bo")) == "added"  # another agent's own verdict
    assert store.record(verdict("duplicate", query_number="INC7", query_text="vpn text of INC7")) == "added"
    rows = store.rows()
    assert [(r["agent"], r["verdict"], r["query_key"][:5]) for r in rows] == [
        ("ana", "unrelated", "text:"), ("bo", "related", "text:"), ("ana", "duplicate", "INC7")]


def test_sqlite_store_is_idempotent_and_exports_pairs(tmp_path):
    store = FeedbackStore.open(default_url(tmp_path / "store"))
    exercise(store)
    assert FeedbackStore.open(default_url(tmp_path / "store")).count() == 3  # durable: another connection sees them
    out = tmp_path / "pairs.jsonl"
    assert store.export(out) == 3
    pairs = read_pairs(out)
    assert pairs["label"].tolist() == [0.0, 0.5, 1.0] and pairs["text2"].tolist() == ["VPN disconnects hourly"] * 3
    first = json.loads(out.read_text().splitlines()[0])
    assert (first["verdict"], first["suggested"], first["agent"], first["query_number"]) == ("unrelated", "INC2", "ana",
                                                                                             None)


def test_postgres_store():
    import sqlalchemy

    schema = f"feedback_test_{uuid.uuid4().hex[:8]}"
    try:
        engine = sqlalchemy.create_engine(POSTGRES)
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    except ImportError:
        pytest.skip("no PostgreSQL driver: pip install 'tickettune[postgres]'")
    except sqlalchemy.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES}: {type(exc.orig).__name__}")
    try:
        scoped = sqlalchemy.create_engine(POSTGRES, connect_args={"options": f"-csearch_path={schema}"})
        exercise(FeedbackStore(scoped))
        scoped.dispose()
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))


def test_a_verdict_not_in_the_list_is_refused():
    with pytest.raises(UserError, match="verdict: 'maybe' is not one of duplicate, related, unrelated"):
        verdict("maybe")


def feedback_file(tmp_path, queries: int):
    lines = []
    for q in range(queries):
        lines.append({"text1": f"query {q}", "text2": f"right {q}", "label": 1.0})
        lines.append({"text1": f"query {q}", "text2": f"wrong {q}", "label": 0.0})
    path = tmp_path / "feedback.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_feedback_joins_the_hard_phase_and_a_fifth_of_the_queries_is_held_out(tmp_path):
    train = pd.DataFrame({"text1": ["a", "b"], "text2": ["c", "d"], "label": [1.0, 0.0], "phase": ["easy", "hard"]})
    pairs = TrainingData(train, train, train)
    added, note = add_feedback(pairs, feedback_file(tmp_path, 30), seed=0, loss="cosine")
    assert len(added.train) == 2 + 48 and set(added.train["phase"].iloc[2:]) == {"hard"}
    assert len(added.feedback) == 12 and not set(added.feedback["text1"]) & set(added.train["text1"])
    assert note.endswith("48 trained on as pairs (hard phase), 12 held out") and note.startswith("60 verdicts (30 duplicate")
    assert "feedback" in added.test_sets().pairs and "feedback" not in pairs.test_sets().pairs
    few = split_feedback(read_feedback(feedback_file(tmp_path, 10)), seed=0)  # 2 held-out queries judge nothing
    assert len(few[0]) == 20 and few[1].empty


def test_feedback_change_reads_rejected_and_confirmed_means():
    held = pd.DataFrame({"text1": ["q", "q", "r"], "text2": ["a", "b", "c"], "label": [0.0, 1.0, 0.0]})
    scores = {"baseline": pd.Series([0.8, 0.7, 0.6]).to_numpy(), "model": pd.Series([0.4, 0.9, 0.2]).to_numpy()}
    assert feedback_change(held, scores) == ("held-out verdicts: rejected suggestions' mean score 0.700 -> 0.300 (2); "
                                             "confirmed suggestions' mean score 0.700 -> 0.900 (1)")


def test_feedback_needs_a_pair_loss_or_the_head_and_a_file(tmp_path):
    train = pd.DataFrame({"text1": ["a"], "text2": ["c"], "label": [1.0]})
    pairs = TrainingData(train, train, train)
    with pytest.raises(UserError, match="train with a pair loss .* or the head stage"):
        add_feedback(pairs, feedback_file(tmp_path, 3), seed=0, loss="group_mnrl")
    with pytest.raises(UserError, match="file not found; write it with `tickettune feedback export"):
        add_feedback(pairs, tmp_path / "none.jsonl", seed=0, loss="cosine")
    # The head stage takes them whatever the encoder-stage loss: a pair term of its own loss.
    added, note = add_feedback(pairs, feedback_file(tmp_path, 30), seed=0, loss="group_mnrl", stage="head")
    assert len(added.feedback_train) == 48 and "48 trained on as the head's pair term, 12 held out" in note


def test_the_heads_feedback_term_by_hand():
    objective = HeadObjective(feedback_margin=0.3)
    query = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    suggested = torch.tensor([[0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [0.1, 0.99498744]])
    # cosines 0.8, 0.6, 0.0, 0.99498744: rejected 0.8 -> (0.8 - 0.3)^2 = 0.25; confirmed 0.6 -> (1 - 0.6)^2 = 0.16;
    # related 0.0 says nothing; rejected 0.995 -> 0.69498744^2 = 0.48300754. Rejected mean 0.36650377, confirmed
    # mean 0.16; the two kinds count alike: 0.26325189.
    labels = torch.tensor([0.0, 1.0, 0.5, 0.0])
    assert float(objective.feedback_loss(query, suggested, labels)) == pytest.approx(0.26325189, abs=1e-6)
    assert float(objective.feedback_loss(query[[0, 3]], suggested[[0, 3]], labels[[0, 3]])) == \
        pytest.approx(0.36650377, abs=1e-6)  # rejected only
    # A rejected pair already below the margin and a confirmed one at cosine 1 cost nothing.
    assert float(objective.feedback_loss(query[:2], torch.tensor([[0.2, 0.9797959], [1.0, 0.0]]),
                                         torch.tensor([0.0, 1.0]))) == 0.0
    assert float(objective.feedback_loss(query[:1], suggested[:1], torch.tensor([0.5]))) == 0.0  # related only


def test_head_feedback_pushes_rejected_pairs_apart_and_keeps_the_rest():
    rng = np.random.default_rng(0)
    dim = 64
    centres = rng.normal(size=(40, dim))
    centres[1::2] = centres[::2] + rng.normal(scale=0.4, size=(20, dim))  # problems in confusable pairs
    groups = np.repeat(np.arange(40), 5)
    vectors = centres[groups] + rng.normal(scale=0.3, size=(200, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # Verdicts: a ticket of problem 2j and one of its look-alike 2j + 1 rejected, two of problem 2j confirmed.
    rows = np.arange(0, 200, 10)
    query, rejected, confirmed = vectors[rows], vectors[rows + 5], vectors[rows + 1]
    assert float(np.mean(np.sum(query * rejected, axis=1))) > 0.7
    feedback = (np.r_[query, query], np.r_[rejected, confirmed], np.r_[np.zeros(20), np.ones(20)])
    objective = HeadObjective(kind="problem", feedback_margin=0.3)
    without, _ = fit_head(vectors, groups, objective, epochs=30, lr=0.01, batch_size=64, seed=0)
    with_feedback, _ = fit_head(vectors, groups, objective, epochs=30, lr=0.01, batch_size=64, seed=0,
                                feedback=feedback)

    def mean_cosine(head, a, b):
        return float(np.mean(np.sum(head.apply(a) * head.apply(b), axis=1)))

    assert mean_cosine(with_feedback, query, rejected) < mean_cosine(without, query, rejected) - 0.1
    assert mean_cosine(with_feedback, query, confirmed) >= mean_cosine(without, query, confirmed) - 0.02


def test_export_command(tmp_path, capsys):
    tickets = tmp_path / "incidents.csv"
    FeedbackStore.open(default_url(tmp_path / "incidents.csv.added")).record(verdict("duplicate"))
    out = tmp_path / "pairs.jsonl"
    assert main(["feedback", "export", "--tickets", str(tickets), "-o", str(out)]) == 0
    assert "1 verdicts written" in capsys.readouterr().out and len(read_pairs(out)) == 1
    for argv, message in [(["--tickets", str(tickets), "-o", str(out)], "already exists; pass --overwrite"),
                          (["-o", str(out)], "pass exactly one of --tickets FILE, --store DIR or --database URL"),
                          (["--store", str(tmp_path / "empty"), "-o", str(tmp_path / "x.jsonl")], "no feedback stored")]:
        assert main(["feedback", "export", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
