"""The head stage: budget plans worked by hand, the vector cache's keys, the head's losses, and a saved head that
plain sentence-transformers loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tickettune.core.errors import UserError
from tickettune.core.vector_cache import CachedEncoder, VectorCache, encoder_key
from tickettune.training.budget import MIN_TRAIN_TICKETS, Throughput, parse_duration, plan_head_budget
from tickettune.training.head import HeadObjective, LinearHead, fit_head, label_kind

pytestmark = pytest.mark.usefixtures("one_thread")


def test_budget_on_a_slow_machine_buys_what_it_can_encode():
    # 300 s; 2,000 held-out texts at 10/s take 200 s. 1,000 cached train tickets cost only their head epochs
    # (10 x 1e-4 s each = 1 s), leaving 99 s for uncached ones at 0.1 + 0.001 s each: 980 of them.
    plan = plan_head_budget(budget_seconds=300, train_tickets=10_000, train_cached=1_000, held_out_uncached=2_000,
                            throughput=Throughput(encode_per_second=10.0, head_seconds_per_ticket_epoch=1e-4), epochs=10)
    assert (plan.train_tickets, plan.epochs) == (1_980, 10)
    assert plan.held_out_seconds == pytest.approx(200) and plan.encode_seconds == pytest.approx(98)
    assert plan.head_seconds == pytest.approx(1.98) and plan.predicted_seconds <= 300
    assert "1,980 of 10,000 train tickets" in plan.describe()


def test_budget_on_a_fast_machine_uses_every_ticket():
    plan = plan_head_budget(budget_seconds=900, train_tickets=30_000, train_cached=0, held_out_uncached=8_000,
                            throughput=Throughput(encode_per_second=2_000.0, head_seconds_per_ticket_epoch=1e-5),
                            epochs=10)
    assert plan.train_tickets == 30_000 and "all 30,000 train tickets" in plan.describe()


def test_budget_cuts_epochs_when_the_head_itself_overruns():
    # Everything cached; 1,000 tickets x 10 epochs x 0.01 s = 100 s > 60 s: 6 epochs fit.
    plan = plan_head_budget(budget_seconds=60, train_tickets=1_000, train_cached=1_000, held_out_uncached=0,
                            throughput=Throughput(encode_per_second=100.0, head_seconds_per_ticket_epoch=0.01), epochs=10)
    assert (plan.train_tickets, plan.epochs) == (1_000, 6) and "cut from 10 to 6" in plan.describe()


def test_budget_keeps_a_minimum_and_honours_the_cap():
    tiny = plan_head_budget(budget_seconds=1, train_tickets=5_000, train_cached=0, held_out_uncached=1_000,
                            throughput=Throughput(encode_per_second=10.0, head_seconds_per_ticket_epoch=0), epochs=5)
    assert tiny.train_tickets == MIN_TRAIN_TICKETS and "too small" in tiny.describe()
    capped = plan_head_budget(budget_seconds=900, train_tickets=5_000, train_cached=0, held_out_uncached=0,
                              throughput=Throughput(encode_per_second=1e6, head_seconds_per_ticket_epoch=0), epochs=5,
                              cap=700)
    assert capped.train_tickets == 700 and "max_train_tickets" in capped.describe()


@pytest.mark.parametrize(("text", "minutes"), [("15m", 15), ("90s", 1.5), ("1.5h", 90), ("20", 20), (" 2 min ", 2)])
def test_durations(text, minutes):
    assert parse_duration(text) == pytest.approx(minutes)


@pytest.mark.parametrize("text", ["", "fast", "-5m", "0", "10 days"])
def test_bad_durations_name_the_option(text):
    with pytest.raises(UserError, match="--budget .* is not a positive duration; write e.g. --budget 15m"):
        parse_duration(text)


class CountingModel:
    """Stands in for a SentenceTransformer: vectors from the text's length, and a count of texts encoded."""

    max_seq_length = 16

    def __init__(self):
        self.seen: list[str] = []

    def encode(self, texts, **kwargs):
        self.seen += list(texts)
        rows = np.array([[len(t), 1.0, 0.5] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def get_embedding_dimension(self):
        return 3


def test_cache_encodes_each_text_once_across_encoders(tmp_path):
    model = CountingModel()
    first = CachedEncoder(model, VectorCache(tmp_path, "key"))
    a = first.encode(["alpha", "be", "alpha"])
    assert model.seen == ["alpha", "be"] and first.encoded == 2
    # A new process (a new cache object) reads the stored shard; only the changed text is encoded again.
    second = CachedEncoder(model, VectorCache(tmp_path, "key"))
    b = second.encode(["alpha", "be!"])
    assert model.seen == ["alpha", "be", "be!"] and second.reused == 1
    assert np.allclose(a[0], b[0]) and a.dtype == np.float32
    # Another key (another model or truncation) shares nothing.
    assert VectorCache(tmp_path, "other").lookup(["alpha"]) == [None]


def test_cache_key_changes_with_weights_and_truncation(tiny_model, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)
    key = encoder_key(str(copy), 64)
    assert encoder_key(str(copy), 64) == key and encoder_key(str(copy), 32) != key
    weights = next(copy.rglob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert encoder_key(str(copy), 64) != key


def test_a_damaged_shard_is_encoded_again(tmp_path):
    model = CountingModel()
    CachedEncoder(model, VectorCache(tmp_path, "k")).encode(["one"])
    next((tmp_path / "k").glob("shard-*.npz")).write_bytes(b"not a zip")
    again = CachedEncoder(model, VectorCache(tmp_path, "k"))
    again.encode(["one"])
    assert model.seen == ["one", "one"]


def test_coarse_loss_pushes_only_and_keeps_same_group_cosines():
    # Three unit vectors; a, b same group at cosine 0.8, c another group at cosine 0.6 to a.
    a, b, c = torch.tensor([1.0, 0.0]), torch.tensor([0.8, 0.6]), torch.tensor([0.6, -0.8])
    x, labels = torch.stack([a, b, c]), torch.tensor([0, 0, 1])
    objective = HeadObjective(kind="coarse", margin=0.3, keep_weight=1.0)
    # Unchanged vectors: keep = 0; push over the 4 ordered different-group pairs: a-c 0.6, b-c 0.0 (below margin).
    expected = ((0.6 - 0.3) ** 2 * 2 + 0 * 2) / 4
    assert float(objective.loss(x, x, labels)) == pytest.approx(expected)
    # Pulling a and b together is not rewarded: the keep term charges the change of their cosine.
    pulled = torch.stack([a, torch.tensor([0.98, 0.199]) / torch.tensor([0.98, 0.199]).norm(), c])
    assert float(objective.loss(pulled, x, labels)) > expected


def test_problem_loss_is_infonce_plus_keep():
    x = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [0.9, 0.3], [-0.2, 1.0]]), dim=1)
    labels = torch.tensor([5, 5, 7])
    objective = HeadObjective(kind="problem", temperature=0.5, keep_weight=0.0)
    cos = x @ x.T
    # Rows 0 and 1 each have one positive (each other); row 2 has none and is left out.
    terms = [-(cos[i, j] / 0.5 - torch.logsumexp(torch.stack([cos[i, k] / 0.5 for k in range(3) if k != i]), 0))
             for i, j in ((0, 1), (1, 0))]
    assert float(objective.loss(x, x, labels)) == pytest.approx(float(sum(terms) / 2), rel=1e-5)


def test_label_kind():
    assert label_kind(["hw"] * 50 + ["hr"] * 50) == "coarse"
    problems = [f"p{i // 2}" for i in range(200)] + [f"single{i}" for i in range(800)]
    assert label_kind(problems) == "problem"
    assert label_kind(problems, "coarse") == "coarse"


def test_fit_head_keeps_the_identity_when_nothing_helps():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(64, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    head, log = fit_head(vectors, rng.integers(0, 4, 64), HeadObjective(), epochs=3, batch_size=16,
                         score=lambda h: -float(np.abs(h.weight - np.eye(4)).sum()))
    assert np.allclose(head.weight, np.eye(4)) and [e["epoch"] for e in log] == [0, 1, 2, 3]
    assert np.allclose(head.scaled(0.5).apply(vectors), vectors, atol=1e-6)


def test_saved_head_loads_in_plain_sentence_transformers(tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    from tickettune.core.models import load_model
    from tickettune.training.head_training import HeadEncoder, head_model

    base = load_model(str(tiny_model))
    rng = np.random.default_rng(1)
    dim = base.get_embedding_dimension()
    head = LinearHead(np.eye(dim, dtype=np.float32) + 0.1 * rng.normal(size=(dim, dim)).astype(np.float32),
                      0.05 * rng.normal(size=dim).astype(np.float32))
    texts = ["vpn drops every hour", "printer jams on tray 2", "password reset loop"]
    expected = HeadEncoder(CachedEncoder.for_model(base, str(tiny_model), tmp_path / "cache"), head).encode(texts)
    head_model(base, head).save(str(tmp_path / "saved"))
    loaded = SentenceTransformer(str(tmp_path / "saved"), device="cpu")  # no tickettune involved
    got = loaded.encode(texts, convert_to_numpy=True)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert np.min(np.sum(got * expected, axis=1)) > 0.9999
    assert not np.allclose(got, base.encode(texts, normalize_embeddings=True), atol=1e-3)


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    from tickettune.data.pairs import PairOptions, build_pairs, write_pair_dir
    from tickettune.data.sample import generate_sample
    from tickettune.data.tickets import read_tickets

    folder = tmp_path_factory.mktemp("head-sample")
    generate_sample(600, 0).to_csv(folder / "sample.csv", index=False)
    # A probe of "bug reports" the sample never contains: 20 filed duplicate pairs among 300 reports.
    rows = [f"{i},viewer crash {i % 20} when opening a type {i % 20} file in build {i},{i % 20 if i < 40 else i}"
            for i in range(300)]
    (folder / "probe.csv").write_text("id,text,problem_id\n" + "\n".join(rows) + "\n", encoding="utf-8")
    tickets = read_tickets(folder / "sample.csv", group_by="problem_id")
    pairset = build_pairs(tickets, PairOptions(difficulty="tfidf", pairs_per_phase=40, eval_pairs=40, test_pairs=60,
                                               split_by="ticket"))
    return write_pair_dir(pairset, folder / "pairs"), folder / "probe.csv"


def test_head_stage_end_to_end(tiny_model, sample_dir, tmp_path):
    from dataclasses import replace

    from sentence_transformers import SentenceTransformer

    from tickettune.evaluation.probes import read_probes
    from tickettune.training.config import resolve_config
    from tickettune.training.dataset import load_pairs
    from tickettune.training.run import train

    pairs_dir, probe = sample_dir
    config = resolve_config("recommended", sets=["head_epochs=3", "max_seq_length=64", "eval_tickets=60", "retrieval_queries=40",
                                                 "bootstrap_resamples=100", "threshold_cv_folds=3",
                                                 f"vector_cache={tmp_path / 'vectors'}"], model_name=str(tiny_model))
    assert config.stage == "head"
    pairs = replace(load_pairs(pairs_dir), probes=read_probes([probe]))
    result = train(config, pairs, tmp_path / "run", show_progress=False)
    assert list(result.metrics) == ["retrieval", "probe:probe", "representative", "hard"]
    probe_result = result.metrics["probe:probe"]
    assert len(probe_result["change"]["accuracy@10_ci95"]) == 2 and probe_result["model"]["n_corpus"] == 300
    log = result.log
    train_tickets = len(pairs.tickets["train"])
    assert log["stage"] == "head" and log["label_kind"] == "problem"
    assert log["budget"]["train_tickets"] == train_tickets and log["vectors"]["encoded"] > train_tickets
    assert [e["step"] for e in log["evals"]] == [0, 1, 2, 3]
    assert log["eval_metric"] == "mrr@10"  # problem links: is a duplicate first?
    assert log["best"]["value"] == max(e["mrr@10"] for e in log["evals"])
    # The saved model is the encoder plus the head, and plain sentence-transformers gives the judged vectors.
    loaded = SentenceTransformer(str(tmp_path / "run" / "model"), device="cpu")
    assert [type(m).__name__ for m in loaded][-2:] == ["Dense", "Normalize"]
    report = (tmp_path / "run" / "report.html").read_text()
    assert report.index("Retrieval on held-out tickets") < report.index("Same-problem probe: probe") \
        < report.index("Hard pairs (stress test)")
    assert "train tickets" in (tmp_path / "run" / "model" / "README.md").read_text()
    # A second run encodes nothing: every vector comes from the cache.
    again = train(config, pairs, tmp_path / "run2", show_progress=False)
    assert again.log["vectors"]["encoded"] == 0 and again.log["vectors"]["from_cache"] > train_tickets
    assert again.metrics["retrieval"]["model"] == result.metrics["retrieval"]["model"]
