import gzip
import json

import pytest

from tickettune.core.errors import UserError
from tickettune.data.pairs_io import pair_file, read_pairs, write_pairs


def test_json_list_jsonl_csv_tsv_and_aliases(tmp_path):
    records = [{"sentence1": "vpn drops", "sentence2": "vpn disconnects", "score": 0.9},
               {"anchor": "printer jam", "positive": "paper stuck", "label": 1}]
    (tmp_path / "a.json").write_text(json.dumps(records))
    frame = read_pairs(tmp_path / "a.json")
    assert list(frame["text1"]) == ["vpn drops", "printer jam"] and list(frame["label"]) == [0.9, 1.0]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert read_pairs(tmp_path / "b.jsonl")["text2"].tolist() == ["vpn disconnects", "paper stuck"]
    (tmp_path / "c.csv").write_text('text1,text2,label\n"a, quoted",b,0.5\nc,d,0\n')
    assert read_pairs(tmp_path / "c.csv")["text1"].tolist() == ["a, quoted", "c"]
    (tmp_path / "d.tsv").write_text("text1\ttext2\tlabel\nx\ty\t1\n")
    assert read_pairs(tmp_path / "d.tsv")["label"].tolist() == [1.0]


def test_object_of_lists_per_phase(tmp_path):
    data = {"phase1": [{"text1": "a", "text2": "b", "label": 1}], "medium": [{"text1": "c", "text2": "d", "label": 0}],
            "3": [{"text1": "e", "text2": "f", "label": 0}]}
    (tmp_path / "p.json").write_text(json.dumps(data))
    assert read_pairs(tmp_path / "p.json")["phase"].tolist() == ["easy", "medium", "hard"]


def test_sts_benchmark_tsv_is_scaled(tmp_path):
    line = "main-captions\tMSRvid\t2012test\t0024\t2.500\tA girl is styling her hair.\tA girl is brushing her hair.\n"
    path = tmp_path / "sts-test.csv"
    path.write_text(line + line.replace("2.500", "5.000"))
    frame = read_pairs(path)
    assert frame["label"].tolist() == [0.5, 1.0] and frame["text1"][0] == "A girl is styling her hair."


def test_gzip_and_cp1252(tmp_path):
    path = tmp_path / "g.csv.gz"
    path.write_bytes(gzip.compress("text1,text2,label\ncaf\u00e9,b,1\n".encode("utf-8")))
    assert read_pairs(path)["text1"][0] == "caf\u00e9"
    path = tmp_path / "w.csv"
    path.write_bytes("text1,text2,label\nna\u00efve,b,1\n".encode("cp1252"))
    assert read_pairs(path)["text1"][0] == "na\u00efve"


@pytest.mark.parametrize(("name", "content", "words"), [
    ("e.json", "", ["empty"]),
    ("m.json", '[{"text1": "a", "text2": "b", "label": 1}', ["malformed JSON", "line 1"]),
    ("l.jsonl", '{"text1": "a", "text2": "b", "label": 1}\n{"text1": \n', ["line 2", "not valid JSON"]),
    ("n.json", '[{"text1": "a", "text2": "b", "label": "high"}]', ["record 1", "'label'", "not a number"]),
    ("r.json", '[{"text1": "a", "text2": "b", "label": 1}, {"text1": "a", "text2": "b", "label": 3}]',
     ["record 2", "outside [0, 1]"]),
    ("nan.json", '[{"text1": "a", "text2": "b", "label": NaN}]', ["record 1", "outside [0, 1]"]),
    ("x.json", '[{"text1": "a", "label": 1}]', ["record 1", "'text2' is missing"]),
    ("w.json", '[{"text1": "  ", "text2": "b", "label": 1}]', ["record 1", "'text1' is empty"]),
    ("c.csv", "text1,text2\na,b\n", ["row 2", "'label' is missing"]),
    ("q.csv", 'text1,text2,label\n"a,b,1\n', ["malformed CSV"]),
    ("k.csv", "text1,text2,label\na,b,1,extra\n", ["row 2", "more fields"]),
    ("s.json", '"just a string"', ["expected a list"]),
    ("p.json", '{"phase9": [{"text1": "a", "text2": "b", "label": 1}]}', ["phase"]),
    ("z.json", "[]", ["no pairs"]),
])
def test_bad_pair_files_are_one_line_errors(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError) as info:
        read_pairs(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message


def test_binary_and_missing_files(tmp_path):
    path = tmp_path / "b.json"
    path.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(UserError, match="binary"):
        read_pairs(path)
    with pytest.raises(UserError, match="not found"):
        read_pairs(tmp_path / "nope.json")
    with pytest.raises(UserError, match="no test set"):
        pair_file(tmp_path, "test")


def test_write_then_read_round_trip_is_byte_stable(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"text1": ["a", "\u00e9"], "text2": ["b", "c"], "label": [1.0, 0.0], "phase": ["easy", "hard"]})
    write_pairs(frame, tmp_path / "one.jsonl")
    write_pairs(read_pairs(tmp_path / "one.jsonl"), tmp_path / "two.jsonl")
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "two.jsonl").read_bytes()


def test_phase_on_some_records_only_is_an_error(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text1": "a", "text2": "b", "label": 1, "phase": "easy"}\n{"text1": "c", "text2": "d", "label": 0}\n')
    with pytest.raises(UserError, match="line 2: field 'phase' is missing"):
        read_pairs(path)
