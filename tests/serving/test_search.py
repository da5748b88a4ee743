"""Similar-ticket search: the on-disk index cache, exact vs FAISS agreement, threshold marks, --ticket, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _lora import build_adapter
from tickettune.cli import main
from tickettune.core.errors import UserError
from tickettune.core.models import model_threshold
from tickettune.serving import index as index_module
from tickettune.serving.index import VectorIndex, choose_backend
from tickettune.serving.search import read_ticket_file, similar_tickets

# Four problems, five incidents each in different words, plus unrelated incidents.
PROBLEMS = {
    "PRB001": ["vpn tunnel drops every few minutes", "vpn tunnel keeps dropping at home", "the vpn tunnel drops again",
               "vpn client tunnel drops after login", "vpn tunnel drops, cannot reach intranet"],
    "PRB002": ["printer toner jam on floor three", "floor three printer jam, toner empty", "toner jam in the printer",
               "printer jam again, toner smudges", "printer on floor three reports toner jam"],
    "PRB003": ["outlook mailbox full cannot send email", "mailbox full, outlook refuses to send",
               "outlook says mailbox full when sending email", "email stuck, outlook mailbox full",
               "cannot send email: outlook mailbox full"],
    "PRB004": ["sap password reset locked account", "locked out of sap after password reset",
               "sap account locked, password reset needed", "password reset for locked sap account",
               "sap locked account after password reset"],
}
OTHERS = ["new monitor request for desk", "badge does not open garage door", "coffee machine broken in kitchen",
          "request access to shared drive finance", "teams camera black during meetings"]


def sample_tickets() -> pd.DataFrame:
    rows = [(problem, text) for problem, texts in PROBLEMS.items() for text in texts] + [("", t) for t in OTHERS]
    return pd.DataFrame({"number": [f"INC{i:04d}" for i in range(1, len(rows) + 1)],
                         "problem_id": [p for p, _ in rows], "text": [t for _, t in rows]})


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """OUT/model, a LoRA adapter as `tickettune train` leaves it (metrics.json is added by the tests that need it)."""
    return build_adapter(tiny_model, tmp_path_factory.mktemp("run") / "model")


def cached_vectors(cache_dir) -> list[np.ndarray]:
    return [np.load(p) for p in sorted(cache_dir.glob("*/vectors.npy"), key=lambda p: p.stat().st_mtime)]


def test_cache_miss_then_hit_then_rebuilt_when_tickets_change(trained, tmp_path):
    tickets = sample_tickets()
    first = similar_tickets(tickets, str(trained), query="vpn tunnel drops", k=3, cache_dir=tmp_path)
    again = similar_tickets(tickets, str(trained), query="vpn tunnel drops", k=3, cache_dir=tmp_path)
    assert (first.cached, again.cached) == (False, True)
    pd.testing.assert_frame_equal(first.hits, again.hits)
    changed = tickets.copy()
    changed.loc[0, "text"] = "keyboard missing keys"
    rebuilt = similar_tickets(changed, str(trained), query="vpn tunnel drops", k=3, cache_dir=tmp_path)
    assert rebuilt.cached is False
    old, new = cached_vectors(tmp_path)
    np.testing.assert_array_equal(old[1:], new[1:])
    assert not np.allclose(old[0], new[0], atol=1e-4)


def test_cache_rebuilt_when_model_changes(trained, tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained, model)
    tickets = sample_tickets()
    assert not similar_tickets(tickets, str(model), ticket="INC0001", k=5, cache_dir=tmp_path / "cache").cached
    assert similar_tickets(tickets, str(model), ticket="INC0001", k=5, cache_dir=tmp_path / "cache").cached
    other = build_adapter(tiny_model, tmp_path / "other", seed=1)
    shutil.copy(other / "adapter_model.safetensors", model / "adapter_model.safetensors")
    assert not similar_tickets(tickets, str(model), ticket="INC0001", k=5, cache_dir=tmp_path / "cache").cached
    before, after = cached_vectors(tmp_path / "cache")
    assert before.shape == after.shape == (25, 32) and not np.allclose(before, after, atol=1e-4)


def test_two_builders_of_one_index_both_succeed(tiny_model, tmp_path, monkeypatch):
    """Servers started together build the same cache entry at once. Here the other's complete entry lands just
    after this builder looked for one and before it moved its own into place (the rename then fails): it keeps its
    own index (the key fixes what is in it), says nothing, and leaves no temporary folder."""
    texts = [f"ticket {i}" for i in range(6)]
    vectors = np.eye(6, 8, dtype=np.float32)
    cache = index_module.IndexCache(tmp_path)
    entry = tmp_path / cache.key(tiny_model, texts, "exact")
    save, exists = VectorIndex.save, Path.exists
    unseen = []

    def save_beside_the_other_writer(self, folder):
        save(self, folder)
        other = tmp_path / ".other"
        other.mkdir()
        save(self, other)
        (other / "index.json").write_text("{}")
        other.rename(entry)
        unseen.append(entry)  # the next look for the entry misses it: it landed a moment later

    def exists_a_moment_before(path):
        if unseen and path == unseen[0]:
            unseen.pop()
            return False
        return exists(path)

    monkeypatch.setattr(VectorIndex, "save", save_beside_the_other_writer)
    monkeypatch.setattr(Path, "exists", exists_a_moment_before)
    index, cached = cache.load_or_build(tiny_model, texts, lambda batch: vectors[:len(batch)])
    assert not cached and len(index) == 6 and not unseen and (entry / "index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry.name]


def test_cache_keeps_only_the_most_recent_indexes(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(index_module, "KEEP_INDEXES", 2)
    tickets = sample_tickets()
    for i in range(4):
        similar_tickets(tickets.assign(text=tickets["text"] + f" v{i}"), str(trained), query="x", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*/index.json"))) == 2


def test_damaged_cache_entry_is_rebuilt(trained, tmp_path):
    tickets = sample_tickets()
    similar_tickets(tickets, str(trained), query="printer", cache_dir=tmp_path)
    (vectors,) = tmp_path.glob("*/vectors.npy")
    vectors.write_bytes(b"not numpy")
    assert similar_tickets(tickets, str(trained), query="printer", cache_dir=tmp_path).cached is False


def test_exact_and_faiss_agree_on_top_k():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    topics = rng.standard_normal((40, 32)).astype(np.float32)
    vectors = np.repeat(topics, 50, axis=0) + 0.15 * rng.standard_normal((2000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[::100] + 0.05 * rng.standard_normal((20, 32)).astype(np.float32)
    exact_scores, exact_rows = VectorIndex(vectors, backend="exact").search(queries, 10)
    ivf = VectorIndex(vectors, backend="ivf")
    assert 1 < ivf.faiss_index.nlist and ivf.n_probe < ivf.faiss_index.nlist  # approximate, not a full scan
    ivf_scores, ivf_rows = ivf.search(queries, 10)
    np.testing.assert_array_equal(exact_rows, ivf_rows)
    np.testing.assert_allclose(exact_scores, ivf_scores, atol=1e-5)
    assert np.all(np.diff(exact_scores, axis=1) <= 0)
    assert (exact_rows // 50 == np.arange(0, 2000, 100)[:, None] // 50).all()  # the query's own topic first


def test_exact_search_worked_by_hand_pads_when_k_exceeds_the_rows():
    vectors = np.array([[1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32)
    scores, rows = VectorIndex(vectors, backend="exact").search(np.array([[0.8, 0.6], [0, 1]]), 5)
    # query 1: cosines 0.8, 0.96, 0.6; query 2: 0, 0.8, 1
    np.testing.assert_array_equal(rows, [[1, 0, 2, -1, -1], [2, 1, 0, -1, -1]])
    np.testing.assert_allclose(scores[:, :3], [[0.96, 0.8, 0.6], [1, 0.8, 0]], atol=1e-6)
    assert np.isneginf(scores[:, 3:]).all()


def test_auto_backend_switches_to_faiss_above_the_size_limit(monkeypatch):
    pytest.importorskip("faiss")
    monkeypatch.setattr(index_module, "EXACT_MAX_ROWS", 100)
    assert (choose_backend(100), choose_backend(101)) == ("exact", "ivf")
    with pytest.raises(UserError, match="unknown"):
        choose_backend(10, "annoy")


def test_fewer_tickets_than_k_pads_nothing_into_the_hits(trained, tmp_path):
    tickets = sample_tickets().head(3)
    result = similar_tickets(tickets, str(trained), query="vpn", k=10, cache_dir=tmp_path)
    assert len(result.hits) == 3 and result.hits["rank"].tolist() == [1, 2, 3]


def test_ticket_excludes_itself(trained, tmp_path):
    tickets = pd.concat([sample_tickets(), sample_tickets().head(1)], ignore_index=True)  # INC0001 twice
    hits = similar_tickets(tickets, str(trained), ticket="INC0001", k=5, cache_dir=tmp_path).hits
    assert len(hits) == 5 and "INC0001" not in set(hits["number"])
    everyone = similar_tickets(tickets, str(trained), ticket="INC0002", k=30, cache_dir=tmp_path).hits
    assert len(everyone) == 25 and "INC0002" not in set(everyone["number"])


def test_incidents_of_a_problem_find_their_problem_with_minilm(minilm, tmp_path):
    tickets = sample_tickets()
    shares = []
    for number, problem in zip(tickets["number"], tickets["problem_id"]):
        if problem:
            hits = similar_tickets(tickets, minilm, ticket=number, k=5, cache_dir=tmp_path).hits
            shares.append((hits["problem_id"] == problem).mean())
    # Each problem has 4 other incidents, so 0.8 is the most a top-5 can share.
    assert np.mean(shares) > 0.6 and np.median(shares) >= 0.6, shares


def test_threshold_from_metrics_json_or_option_marks_hits(trained, tmp_path):
    tickets = sample_tickets()
    model = tmp_path / "run" / "model"
    shutil.copytree(trained, model)
    scores = similar_tickets(tickets, str(model), query="vpn tunnel drops", k=25, cache_dir=tmp_path).hits["score"]
    assert scores.max() > scores.min()
    middle = float((scores.max() + scores.min()) / 2)
    (model.parent / "metrics.json").write_text(json.dumps({"model": {"threshold": middle}, "baseline": {}}))
    result = similar_tickets(tickets, str(model), query="vpn tunnel drops", k=25, cache_dir=tmp_path)
    assert result.threshold == middle
    assert result.hits["above_threshold"].tolist() == (result.hits["score"] >= middle).tolist()
    assert result.hits["above_threshold"].iloc[0] and not result.hits["above_threshold"].iloc[-1]
    explicit = similar_tickets(tickets, str(model), query="vpn tunnel drops", k=25, threshold=2.0, cache_dir=tmp_path)
    assert explicit.threshold == 2.0 and not explicit.hits["above_threshold"].any()


def test_threshold_absent_or_unreadable(tiny_model, tmp_path):
    assert model_threshold(str(tiny_model)) is None
    assert model_threshold("all-MiniLM-L6-v2") is None
    (tmp_path / "model").mkdir()
    (tmp_path / "metrics.json").write_text(json.dumps({"model": {"threshold": "high"}}))
    with pytest.raises(UserError, match=r"metrics.json: model.threshold is 'high'"):
        model_threshold(str(tmp_path / "model"))


def test_bad_requests_are_user_errors(trained, tmp_path):
    tickets = sample_tickets()
    with pytest.raises(UserError, match="exactly one"):
        similar_tickets(tickets, str(trained), cache_dir=tmp_path)
    with pytest.raises(UserError, match="no ticket numbered 'INC9999'"):
        similar_tickets(tickets, str(trained), ticket="INC9999", cache_dir=tmp_path)
    with pytest.raises(UserError, match="no ticket number column"):
        similar_tickets(tickets.drop(columns="number"), str(trained), ticket="INC0001", cache_dir=tmp_path)
    with pytest.raises(UserError, match="'text' column"):
        similar_tickets(tickets.rename(columns={"text": "body"}), str(trained), query="x", cache_dir=tmp_path)


def test_read_ticket_file_builds_text_and_skips_empty(tmp_path):
    path = tmp_path / "export.csv"
    pd.DataFrame({"Number": ["INC1", "INC2", "INC3"], "Short description": ["vpn down", "", "printer"],
                  "Description": ["since 9am", "", "jam"]}).to_csv(path, index=False)
    table = read_ticket_file(path)
    assert table.frame["number"].tolist() == ["INC1", "INC3"]
    assert table.frame["text"].tolist() == ["vpn down\nsince 9am", "printer\njam"]
    assert "left out 1" in table.notes[0] and table.text_columns == ["short_description", "description"]


def test_cli_search_prints_marked_table(trained, tmp_path, capsys):
    path = tmp_path / "tickets.csv"
    sample_tickets().to_csv(path, index=False)
    args = ["search", "--model", str(trained), "--tickets", str(path), "--cache-dir", str(tmp_path / "cache")]
    assert main(args + ["--ticket", "INC0006", "-k", "3", "--show", "problem_id", "--threshold", "-1"]) == 0
    out = capsys.readouterr().out
    assert "3 most similar of 25 tickets" in out and "index built" in out and "threshold -1.000" in out
    assert "INC0006" not in out and out.count("INC00") == 3 and out.count("yes") == 3 and "problem_id" in out
    assert main(args + ["--ticket", "INC0404"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: tickets: no ticket numbered 'INC0404'") and err.count("\n") == 1
    assert main(args + ["--query", "vpn", "--show", "problm"]) == 2
    err = capsys.readouterr().err
    assert "no column 'problm' for --show; did you mean 'problem_id'?" in err and err.count("\n") == 1


def test_cli_shows_ticket_text_verbatim(trained, tmp_path, capsys):
    path = tmp_path / "tickets.jsonl"
    path.write_text('{"number": "INC1", "text": "[bold]not markup[/bold]\\nsecond line"}\n'
                    '{"number": "INC2", "text": "vpn"}\n')
    assert main(["search", "-m", str(trained), "-t", str(path), "-q", "vpn", "--cache-dir", str(tmp_path / "c")]) == 0
    assert "[bold]not markup[/bold] second line" in capsys.readouterr().out
