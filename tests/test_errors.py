"""Every error a user can cause: one line on stderr, exit code 2, no traceback, nothing half-written."""

import errno
import gzip
import json
from pathlib import Path

import pytest

from tickettune.cli import main
from tickettune.core.errors import UserError

GOOD_PAIR = {"text1": "vpn drops every hour", "text2": "vpn disconnects", "label": 1, "phase": "easy"}


def _write(folder: Path, name: str, content) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _pairs_dir(folder: Path, drop: str = "", train_records=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    def records(role: str, n: int):
        return [dict(GOOD_PAIR, text1=f"{role} ticket {i}", text2=f"{role} reply {i}", label=i % 2,
                     phase=("easy", "medium", "hard")[i % 3]) for i in range(n)]

    files = {"train.jsonl": train_records or records("train", 6), "eval.jsonl": records("eval", 4),
             "test.jsonl": records("test", 4)}
    for name, records in files.items():
        if name != drop:
            _write(folder, name, "\n".join(json.dumps(r) for r in records) + "\n")
    return folder


TICKETS_HEADER = "number,short_description,description,problem_id\n"
CASES = {
    "pairs: missing file": (["pairs", "{d}/nope.csv", "-o", "{out}"], ["not found"]),
    "pairs: empty file": (["pairs", "{d}/empty.csv", "-o", "{out}"], ["empty"]),
    "pairs: binary file": (["pairs", "{d}/binary.csv", "-o", "{out}"], ["binary"]),
    "pairs: malformed JSON": (["pairs", "{d}/bad.json", "-o", "{out}"], ["JSON"]),
    "pairs: malformed XLSX": (["pairs", "{d}/bad.xlsx", "-o", "{out}"], ["bad.xlsx"]),
    "pairs: misspelt column": (["pairs", "{d}/tickets.csv", "--text-column", "short_descripton", "-o", "{out}"],
                               ["short_descripton"]),
    "pairs: misspelt group": (["pairs", "{d}/tickets.csv", "--group-by", "problemid", "-o", "{out}"], ["problemid"]),
    "pairs: only empty texts": (["pairs", "{d}/blank.csv", "-o", "{out}"], ["blank.csv"]),
    "pairs: damaged gzip": (["pairs", "{d}/broken.csv.gz", "-o", "{out}"], ["gzip"]),
    "pairs: malformed JSONL": (["pairs", "{d}/bad.jsonl", "-o", "{out}"], ["line 2", "JSON"]),
    "pairs: malformed CSV": (["pairs", "{d}/badquote.csv", "-o", "{out}"], ["malformed CSV"]),
    "pairs: a directory, not a file": (["pairs", "{pairs}", "-o", "{out}"], ["is a directory"]),
    "check: missing dir": (["check", "{d}/nowhere"], ["nowhere"]),
    "check: null text": (["check", "{nulltext}"], ["text1"]),
    "train: whitespace-only text": (["train", "--pairs", "{spacetext}", "-o", "{out}"], ["empty"]),
    "train: missing label": (["train", "--pairs", "{nolabeldir}", "-o", "{out}"], ["label", "missing"]),
    "evaluate: test texts among the training pairs": (["evaluate", "--model", "{tiny}", "--pairs", "{pairs}/train.jsonl",
                                                       "--train-pairs", "{pairs}"], ["--allow-leakage"]),
    "train: unknown preset": (["train", "--pairs", "{pairs}", "--preset", "v3", "-o", "{out}"], ["v3"]),
    "train: unknown key": (["train", "--pairs", "{pairs}", "--set", "lerning_rate=1", "-o", "{out}"], ["lerning_rate"]),
    "train: unknown loss": (["train", "--pairs", "{pairs}", "--set", "loss=arcface", "-o", "{out}"], ["loss"]),
    "train: negative epochs": (["train", "--pairs", "{pairs}", "--set", "phase_epochs=[1,-1,1]", "-o", "{out}"],
                               ["phase_epochs"]),
    "train: dropout >= 1": (["train", "--pairs", "{pairs}", "--set", "lora_dropout=1.5", "-o", "{out}"], ["lora_dropout"]),
    "train: lr <= 0": (["train", "--pairs", "{pairs}", "--set", "lr=0", "-o", "{out}"], ["lr"]),
    "train: wrong type": (["train", "--pairs", "{pairs}", "--set", "batch_size=many", "-o", "{out}"], ["batch_size"]),
    "train: bad YAML config": (["train", "--pairs", "{pairs}", "--config", "{d}/bad.yaml", "-o", "{out}"], ["YAML"]),
    "train: no test set": (["train", "--pairs", "{notest}", "-o", "{out}"], ["test"]),
    "train: missing model": (["train", "--pairs", "{pairs}", "--model", "no/such-model", "-o", "{out}"], ["not found"]),
    "train: label outside [0,1]": (["train", "--pairs", "{badlabel}", "-o", "{out}"], ["outside [0, 1]"]),
    "train: NaN label": (["train", "--pairs", "{nanlabel}", "-o", "{out}"], ["label"]),
    "train: a phase with no pairs": (["train", "--pairs", "{easyonly}", "--model", "{tiny}", "-o", "{out}"], ["phase"]),
    "train: output holds results": (["train", "--pairs", "{pairs}", "-o", "{full}"], ["already holds results"]),
    "train: nothing to resume": (["train", "--pairs", "{pairs}", "--model", "{tiny}", "--resume", "-o", "{out}"], ["resume"]),
    "evaluate: missing model": (["evaluate", "--model", "no/such-model", "--pairs", "{pairs}"], ["not found"]),
    "evaluate: pair file with a missing field": (["evaluate", "--model", "{tiny}", "--pairs", "{d}/nolabel.json"], ["label"]),
    "evaluate: non-numeric label": (["evaluate", "--model", "{tiny}", "--pairs", "{d}/textlabel.csv"], ["row 2"]),
    "evaluate: unknown ticket column": (["evaluate", "--model", "{tiny}", "--tickets", "{d}/tickets.csv", "--group-by",
                                         "problemid"], ["problemid"]),
    "evaluate: tickets all in one group": (["evaluate", "--model", "{tiny}", "--tickets", "{d}/onegroup.csv"],
                                           ["one group", "--group-by"]),
    "evaluate: tickets in groups of one": (["evaluate", "--model", "{tiny}", "--tickets", "{d}/singles.csv"],
                                           ["no group holds two tickets"]),
    "evaluate: empty ticket file": (["evaluate", "--model", "{tiny}", "--tickets", "{d}/empty.csv"], ["empty"]),
    "evaluate: --group-by without --tickets": (["evaluate", "--model", "{tiny}", "--pairs", "{pairs}", "--group-by",
                                                "problem_id"], ["--tickets"]),
    "evaluate: neither pairs nor tickets": (["evaluate", "--model", "{tiny}"], ["--pairs", "--tickets"]),
    "train: unknown ticket column": (["train", "--tickets", "{d}/tickets.csv", "--group-by", "problemid", "-o", "{out}"],
                                     ["problemid"]),
    "train: tickets all in one group": (["train", "--tickets", "{d}/onegroup.csv", "-o", "{out}"], ["one group"]),
    "train: tickets in groups of one": (["train", "--tickets", "{d}/singles.csv", "-o", "{out}"],
                                        ["no group holds two tickets"]),
    "train: empty ticket file": (["train", "--tickets", "{d}/empty.csv", "-o", "{out}"], ["empty"]),
    "train: tickets and pairs": (["train", "--tickets", "{d}/tickets.csv", "--pairs", "{pairs}", "-o", "{out}"],
                                 ["not both"]),
    "train: group loss without tickets": (["train", "--pairs", "{pairs}", "--model", "{tiny}", "--set",
                                           "loss=batch_all_triplet", "-o", "{out}"], ["train_tickets.jsonl"]),
    "train: retrieval metric without tickets": (["train", "--pairs", "{pairs}", "--model", "{tiny}", "--set",
                                                 "eval_metric=mrr@10", "-o", "{out}"], ["eval tickets"]),
    "train: update scale above 1": (["train", "--pairs", "{pairs}", "--set", "update_scales=[0.5,2]", "-o", "{out}"],
                                    ["update_scales"]),
    "train: batch too small for its groups": (["train", "--pairs", "{pairs}", "--set", "loss=batch_all_triplet", "--set",
                                               "batch_size=8", "-o", "{out}"], ["groups_per_batch"]),
    "train: bad --budget": (["train", "--tickets", "{d}/tickets.csv", "--budget", "soon", "-o", "{out}"],
                            ["--budget 'soon'", "15m"]),
    "train: zero --budget": (["train", "--tickets", "{d}/tickets.csv", "--budget", "0m", "-o", "{out}"], ["--budget"]),
    "train: missing --probe file": (["train", "--tickets", "{d}/tickets.csv", "--probe", "{d}/nope.csv", "-o", "{out}"],
                                    ["nope.csv", "not found"]),
    "train: --probe-group without --probe": (["train", "--tickets", "{d}/tickets.csv", "--probe-group", "problem_id",
                                              "-o", "{out}"], ["--probe FILE"]),
    "train: probe with no duplicates": (["train", "--tickets", "{d}/tickets.csv", "--probe", "{d}/singles.csv", "-o",
                                         "{out}"], ["probe", "no group holds two tickets"]),
    "train: probe group column misspelt": (["train", "--tickets", "{d}/tickets.csv", "--probe", "{d}/tickets.csv",
                                            "--probe-group", "dup_of", "-o", "{out}"], ["dup_of"]),
    "train: --probe-group count off": (["train", "--tickets", "{d}/tickets.csv", "--probe", "{d}/tickets.csv",
                                        "--probe-group", "problem_id", "--probe-group", "number", "--probe",
                                        "{d}/onegroup.csv", "--probe", "{d}/singles.csv", "-o", "{out}"],
                                       ["--probe-group given 2 times for 3"]),
    "train: unknown label kind": (["train", "--tickets", "{d}/tickets.csv", "--set", "label_kind=topic", "-o", "{out}"],
                                  ["label_kind", "coarse"]),
    "train: unknown stage": (["train", "--tickets", "{d}/tickets.csv", "--set", "stage=adapter", "-o", "{out}"],
                             ["stage", "head"]),
    "train: head stage without tickets": (["train", "--pairs", "{pairs}", "--model", "{tiny}", "--set", "stage=head",
                                           "-o", "{out}"], ["head stage", "--tickets"]),
    "train: --resume with the head stage": (["train", "--tickets", "{d}/tickets.csv", "--model", "{tiny}", "--resume",
                                             "-o", "{out}"], ["--resume", "head stage"]),
    "train: --feedback file missing": (["train", "--tickets", "{d}/tickets.csv", "--feedback", "{d}/f.jsonl",
                                        "-o", "{out}"], ["--feedback", "file not found", "feedback export"]),
    "evaluate: missing --probe file": (["evaluate", "--model", "{tiny}", "--probe", "{d}/nope.csv"], ["nope.csv"]),
    "sweep: head stage": (["sweep", "--pairs", "{pairs}", "--set", "stage=head", "--trials", "1", "--storage",
                           "sqlite:///{d}/s.db"], ["encoder stage", "recommended-lora"]),
    "demo: unknown preset": (["demo", "--preset", "turbo", "-o", "{out}"], ["turbo"]),
    "demo: output holds results": (["demo", "-o", "{full}"], ["already holds results"]),
    "demo: missing model": (["demo", "--model", "nowhere/model", "-o", "{out}"], ["not found"]),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("bad")
    _write(d, "empty.csv", "")
    _write(d, "binary.csv", b"\x00\x01\x02\x03" * 200)
    _write(d, "bad.json", '{"result": [{"number": "INC1",')
    _write(d, "bad.xlsx", b"PK\x03\x04 this is not really a workbook")
    _write(d, "tickets.csv", TICKETS_HEADER + "".join(f"INC{i},printer {i} jams,paper stuck,PRB{i % 3}\n" for i in range(30)))
    _write(d, "blank.csv", TICKETS_HEADER + "".join(f"INC{i},  ,,PRB1\n" for i in range(5)))
    _write(d, "onegroup.csv", TICKETS_HEADER + "".join(f"INC{i},printer {i} jams,paper stuck,PRB1\n" for i in range(30)))
    _write(d, "singles.csv", TICKETS_HEADER + "".join(f"INC{i},printer {i} jams,paper stuck,PRB{i}\n" for i in range(30)))
    _write(d, "broken.csv.gz", gzip.compress(b"number,short_description\nINC1,x\n")[:20])
    _write(d, "bad.yaml", "lr: [1, 2\n")
    _write(d, "nolabel.json", json.dumps([{"text1": "a", "text2": "b"}]))
    _write(d, "textlabel.csv", "text1,text2,label\na,b,high\n")
    _write(d, "bad.jsonl", '{"text": "a", "group": "x"}\n{oops\n')
    _write(d, "badquote.csv", 'number,short_description\nINC1,"unterminated\nINC2,ok\n')
    full = d / "full"
    full.mkdir()
    _write(full, "metrics.json", "{}")
    bad_label = [dict(GOOD_PAIR, label=2)] * 3
    nan_label = [dict(GOOD_PAIR, label=float("nan"))] * 3
    return {"d": d, "tiny": tiny_model, "full": full, "out": d / "out", "pairs": _pairs_dir(d / "pairs"),
            "notest": _pairs_dir(d / "notest", drop="test.jsonl"),
            "badlabel": _pairs_dir(d / "badlabel", train_records=bad_label),
            "nanlabel": _pairs_dir(d / "nanlabel", train_records=nan_label),
            "nulltext": _pairs_dir(d / "nulltext", train_records=[dict(GOOD_PAIR, text1=None)] * 3),
            "spacetext": _pairs_dir(d / "spacetext", train_records=[dict(GOOD_PAIR, text1="   ")] * 3),
            "nolabeldir": _pairs_dir(d / "nolabeldir", train_records=[{"text1": "a", "text2": "b", "phase": "easy"}] * 3),
            "easyonly": _pairs_dir(d / "easyonly",
                                   train_records=[dict(GOOD_PAIR, text1=f"e {i}", label=i % 2) for i in range(4)])}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_errors_end_in_one_line_and_exit_2(case, inputs, capsys):
    args, words = CASES[case]
    argv = [a.format(**inputs) for a in args]
    before = sorted(p.name for p in inputs["d"].iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    # Nothing half-written: no output directory, no temporary or partial folder left beside it.
    assert sorted(p.name for p in inputs["d"].iterdir()) == before
    assert sorted(p.name for p in inputs["full"].iterdir()) == ["metrics.json"]


def test_debug_shows_the_traceback(inputs):
    with pytest.raises(UserError, match="preset"):
        main(["--debug", "train", "--pairs", str(inputs["pairs"]), "--preset", "v3", "-o", str(inputs["out"])])


WRITE_FAILURES = {
    "disk full": OSError(errno.ENOSPC, "No space left on device"),
    "permission denied": PermissionError(errno.EACCES, "Permission denied"),
    "Ctrl-C": KeyboardInterrupt(),
}


@pytest.mark.parametrize("failure", sorted(WRITE_FAILURES))
@pytest.mark.parametrize("command", ["pairs", "evaluate"])
def test_a_failure_while_writing_leaves_nothing_behind(command, failure, inputs, tmp_path, monkeypatch, capsys):
    """Disk full, no permission or Ctrl-C half-way through writing: one line, exit 2, and OUT as it was."""
    import tickettune.data.pairs_io
    import tickettune.evaluation.report

    tickets = _write(tmp_path, "tickets.csv", TICKETS_HEADER + "".join(
        f"INC{i},printer {i} jams on floor {i % 7},paper stuck in tray {i % 5},PRB{i % 40}\n" for i in range(400)))
    out = tmp_path / "out"
    argv = {"pairs": ["pairs", str(tickets), "--difficulty", "tfidf", "--pairs-per-phase", "20", "--eval-pairs", "10",
                      "--test-pairs", "10", "--test-difficulty", "all", "-o", str(out)],
            "evaluate": ["evaluate", "--model", str(inputs["tiny"]), "--pairs", str(inputs["pairs"]), "-o", str(out)]}[command]
    # pairs: the train file is written, the failure strikes at the next; evaluate: metrics.json is written, then
    # the report fails.
    module, name, strike = {"pairs": (tickettune.data.pairs_io, "write_pairs", 2),
                            "evaluate": (tickettune.evaluation.report, "write_report", 1)}[command]
    original, calls = getattr(module, name), []

    def write_until_the_failure(*args, **kwargs):
        calls.append(args)
        if len(calls) == strike:
            raise WRITE_FAILURES[failure]
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, write_until_the_failure)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert {"disk full": "free disk space", "permission denied": "permissions", "Ctrl-C": "interrupted"}[failure] in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tickets.csv"]
