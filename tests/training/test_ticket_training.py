"""Learning from labelled tickets: pairs writes each split's tickets, group losses train on them, and every run is
judged on retrieval over held-out tickets, representative pairs and the hard pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tickettune.cli import main
from tickettune.data.pairs import PairOptions, build_pairs, write_pair_dir
from tickettune.data.pairs_io import read_pairs, read_ticket_set
from tickettune.data.sample import generate_sample
from tickettune.data.tickets import read_tickets
from tickettune.training.config import resolve_config
from tickettune.training.dataset import load_pairs
from tickettune.training.run import train

pytestmark = pytest.mark.usefixtures("one_thread")
KNOBS = ["batch_size=8", "groups_per_batch=4", "max_seq_length=32", "lr=0.001", "phase_epochs=[0.5,0.5,0.5]",
         "eval_tickets=60", "retrieval_queries=40", "bootstrap_resamples=100", "threshold_cv_folds=3",
         "save_steps=null", "update_scales=[0.5,1]"]


@pytest.fixture(scope="module")
def sample_pairs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sample")
    generate_sample(600, 0).to_csv(folder / "sample.csv", index=False)
    tickets = read_tickets(folder / "sample.csv", group_by="problem_id")
    pairset = build_pairs(tickets, PairOptions(difficulty="tfidf", pairs_per_phase=40, eval_pairs=40, test_pairs=60))
    return write_pair_dir(pairset, folder / "pairs")


def test_pairs_write_each_splits_tickets_and_representative_test_pairs(sample_pairs):
    card = json.loads((sample_pairs / "datacard.json").read_text())
    tickets = {name: read_ticket_set(sample_pairs / f"{name}_tickets.jsonl") for name in ("train", "eval", "test")}
    for name, frame in tickets.items():
        assert list(frame.columns) == ["number", "text", "group"]
        assert len(frame) == card["splits"][name]["tickets_written"] > 0
    # No ticket text in two splits: held-out tickets are really held out.
    texts = {name: set(frame["text"].str.lower()) for name, frame in tickets.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["eval"]
    representative = read_pairs(sample_pairs / "test_representative.jsonl")
    assert len(representative) == card["representative_test_pairs"]["pairs"] > 0
    assert (representative["label"] >= 0.5).sum() == len(representative) / 2
    assert set(representative["text1"]) | set(representative["text2"]) <= texts["test"] | set(tickets["test"]["text"])


def test_representative_pairs_are_not_mined():
    # Dissimilar pairs drawn uniformly share words about as often as random pairs do; mined ones share more.
    from tickettune.core.similarity import tfidf_vectors

    frame = generate_sample(1500, 1)
    frame.to_csv(path := Path(__import__("tempfile").mkdtemp()) / "s.csv", index=False)
    pairset = build_pairs(read_tickets(path, group_by="problem_id"),
                          PairOptions(difficulty="tfidf", pairs_per_phase=50, eval_pairs=100, test_pairs=400,
                                      test_difficulty="all"))
    tickets = pairset.tickets["test"]
    vectors = tfidf_vectors(list(tickets["text"]))
    row = {t: i for i, t in enumerate(tickets["text"])}

    def dissimilar_overlap(pairs):
        other = pairs[pairs["label"] < 0.5]
        a, b = [row[t] for t in other["text1"]], [row[t] for t in other["text2"]]
        return float(np.mean(np.asarray(vectors[a].multiply(vectors[b]).sum(axis=1))))

    assert dissimilar_overlap(pairset.representative) < dissimilar_overlap(pairset.test)


def test_group_training_is_judged_on_retrieval_first(tiny_model, sample_pairs, tmp_path):
    config = resolve_config("recommended-lora", sets=KNOBS, model_name=str(tiny_model))
    assert config.loss == "batch_all_triplet" and config.eval_metric == "precision@10"
    result = train(config, sample_pairs, tmp_path / "run", show_progress=False)
    assert list(result.metrics) == ["retrieval", "representative", "hard"]
    retrieval = result.metrics["retrieval"]
    assert retrieval["model"]["n_corpus"] == len(load_pairs(sample_pairs).tickets["test"])
    assert all(len(retrieval["change"][f"{key}_ci95"]) == 2 for key in ("precision@10", "mrr@10", "map@100"))
    log = result.log
    assert [p["name"] for p in log["phases"]] == ["easy", "medium", "hard"]
    assert all("precision@10" in e and "spearman" in e for e in log["evals"])
    # Keep-best selects on retrieval: the best value is the highest eval precision@10 seen.
    assert log["best"]["value"] == max(e["precision@10"] for e in log["evals"])
    if log["best"]["step"]:
        assert set(log["update_scale"]["eval"]) == {"0.5", "1"}
    report = (tmp_path / "run" / "report.html").read_text()
    assert report.index("Retrieval on held-out tickets") < report.index("Representative pairs") \
        < report.index("Hard pairs (stress test)")
    # The fingerprints are of the tickets trained on, which the held-out tickets are not among.
    stored = json.loads((tmp_path / "run" / "model" / "tickettune_training_texts.json").read_text())["fingerprints"]
    assert len(stored) > 50


@pytest.mark.parametrize("loss", ["group_mnrl", "group_gist", "batch_hard_soft_margin_triplet"])
def test_other_group_losses_train(tiny_model, sample_pairs, tmp_path, loss):
    config = resolve_config("recommended-lora", sets=KNOBS + [f"loss={loss}", "update_scales=[1]", "phase_epochs=[0.3]"],
                            model_name=str(tiny_model))
    result = train(config, sample_pairs, tmp_path / loss, show_progress=False)
    assert result.log["total_steps"] > 0 and "retrieval" in result.metrics
    assert result.log["update_scale"] is None


def test_update_scale_zero_is_the_untuned_model(tiny_model, sample_pairs, tmp_path):
    from tickettune.core.models import load_model
    from tickettune.core.similarity import pair_scores
    from tickettune.training.lora import add_lora
    from tickettune.training.trainer import UpdateScaler

    pairs = load_pairs(sample_pairs).test.head(20)
    model = load_model(str(tiny_model), 32)
    untuned = pair_scores(model, pairs)
    config = resolve_config("recommended-lora", sets=KNOBS, model_name=str(tiny_model))
    scaler = UpdateScaler(model, lora=True)
    add_lora(model, config)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    trained = pair_scores(model, pairs)
    scaler.capture(model)
    scaler.apply(model, 0.0)
    assert np.allclose(pair_scores(model, pairs), untuned, atol=1e-5)
    scaler.apply(model, 1.0)
    assert np.allclose(pair_scores(model, pairs), trained, atol=1e-5) and not np.allclose(trained, untuned, atol=1e-3)


def test_train_and_evaluate_from_a_ticket_file(tiny_model, tmp_path, capsys):
    generate_sample(500, 2).to_csv(tmp_path / "incidents.csv", index=False)
    out = tmp_path / "run"
    sets = [arg for knob in KNOBS for arg in ("--set", knob)]
    assert main(["train", "--tickets", str(tmp_path / "incidents.csv"), "--group-by", "problem_id", "-m",
                 str(tiny_model), *sets, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.index("Retrieval on held-out tickets") < printed.index("Hard pairs (stress test)")
    assert (out / "pairs" / "test_tickets.jsonl").is_file()
    assert main(["evaluate", "--model", str(out / "model"), "--baseline", str(tiny_model), "--pairs", str(out / "pairs"),
                 "--json", str(tmp_path / "m.json"), "--resamples", "100", "--queries", "30"]) == 0
    data = json.loads((tmp_path / "m.json").read_text())
    assert list(data) == ["retrieval", "representative", "hard"] and data["retrieval"]["model"]["n_queries"] == 30
    # A ticket file searched directly: every ticket is the corpus.
    assert main(["evaluate", "--model", str(tiny_model), "--tickets", str(tmp_path / "incidents.csv"), "--json",
                 str(tmp_path / "t.json"), "--resamples", "100", "--queries", "25"]) == 0
    direct = json.loads((tmp_path / "t.json").read_text())
    assert list(direct) == ["retrieval"] and direct["retrieval"]["model"]["n_corpus"] == 500
