"""Reading ticket exports: every input format, column matching, group linking, and one-line errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from tickettune.cli import main
from tickettune.core.errors import UserError
from tickettune.data.tickets import TicketTable, build_text, canonical, link_components, read_tickets

FIELDS = ["number", "short_description", "description", "category", "problem_id", "parent_incident"]
ROWS = [
    ["INC001", "VPN not connecting", "Certificate error on GlobalProtect", "Network", "PRB001", ""],
    ["INC002", "Cannot reach intranet from home", "", "Network", "", "INC001"],
    ["INC003", "Outlook crashes on start", "Since the update", "Software", "PRB002", ""],
    ["INC004", "Outlook closes itself", "After Office update", "Software", "", "INC003"],
    ["INC005", "New mouse please", "", "Hardware", "", ""],
]
LABELS = ["Number", "Short description", "Description", "Category", "Problem", "Parent Incident"]


def write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    pd.DataFrame(rows, columns=header).to_csv(path, index=False, encoding=encoding)
    return path


def groups_of(table: TicketTable) -> dict[str, str]:
    return dict(zip(table.frame["number"], table.frame["group"]))


def expected_grouping(table: TicketTable) -> None:
    groups, frame = groups_of(table), table.frame
    assert groups["INC001"] == groups["INC002"] == "problem:PRB001"
    assert groups["INC003"] == groups["INC004"] == "problem:PRB002"
    assert groups["INC005"] == "ticket:INC005"
    assert frame.loc[frame["number"] == "INC001", "text"].item() == "VPN not connecting\nCertificate error on GlobalProtect"
    assert frame.loc[frame["number"] == "INC002", "text"].item() == "Cannot reach intranet from home"


def test_servicenow_csv_with_field_names(tmp_path):
    table = read_tickets(write_csv(tmp_path / "incidents.csv", FIELDS, ROWS))
    expected_grouping(table)
    assert table.group_by == "problem_id"
    assert table.linked_through == ["problem_id", "parent_incident"]
    assert list(table.frame["row"]) == [2, 3, 4, 5, 6]


def test_servicenow_csv_with_display_labels_cp1252_and_gzip(tmp_path):
    rows = [row[:] for row in ROWS]
    rows[4][1] = "Nouvelle souris, clavier cassé"
    path = write_csv(tmp_path / "export.csv", LABELS, rows, encoding="cp1252")
    packed = tmp_path / "export.csv.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    table = read_tickets(packed, group_by="Problem")
    expected_grouping(table)
    assert "cassé" in table.frame.loc[table.frame["number"] == "INC005", "text"].item()


def test_table_api_json_with_display_value_objects(tmp_path):
    result = []
    for i, row in enumerate(ROWS):
        record = {f: {"display_value": v, "value": f"v-{v}" if v else ""} for f, v in zip(FIELDS, row)}
        record["sys_id"] = f"sys{i}"
        result.append(record)
    path = tmp_path / "incident.json"
    path.write_text(json.dumps({"result": result}), encoding="utf-8")
    expected_grouping(read_tickets(path))


def test_table_api_json_plain_values_link_through_sys_id(tmp_path):
    result = [dict(zip(FIELDS, row), sys_id=f"sys{i}") for i, row in enumerate(ROWS)]
    # Without display values a reference field holds the parent's sys_id.
    result[1]["parent_incident"] = {"link": "https://example.service-now.com/api/now/table/incident/sys0", "value": "sys0"}
    result[3]["parent_incident"] = "sys2"
    path = tmp_path / "incident.json"
    path.write_text(json.dumps({"result": result}), encoding="utf-8")
    expected_grouping(read_tickets(path))


def test_xlsx_export(tmp_path):
    path = tmp_path / "incidents.xlsx"
    pd.DataFrame(ROWS, columns=LABELS).to_excel(path, index=False)
    expected_grouping(read_tickets(path))


def test_generic_csv_and_jsonl_with_text_and_label_columns(tmp_path):
    rows = [["printer jam on floor 2", "Hardware"], ["reset my password", "Access"], ["toner empty", "Hardware"]]
    csv_frame = read_tickets(write_csv(tmp_path / "t.csv", ["text", "topic_group"], rows), ["text"], "topic_group").frame
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"body": t, "label": g}) for t, g in rows) + "\n", encoding="utf-8")
    jsonl_frame = read_tickets(path, ["body"], "label").frame
    for frame in (csv_frame, jsonl_frame):
        assert list(frame["text"]) == [r[0] for r in rows]
        assert list(frame["group"]) == ["Hardware", "Access", "Hardware"]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("text\ttopic_group\n" + "\n".join("\t".join(r) for r in rows), encoding="utf-8")
    assert list(read_tickets(tsv, group_by="topic_group").frame["text"]) == [r[0] for r in rows]


def test_text_fields_are_configurable_and_repeats_left_out(tmp_path):
    frame = read_tickets(write_csv(tmp_path / "i.csv", FIELDS, ROWS), ["description,short_description"], "category").frame
    assert frame.loc[0, "text"] == "Certificate error on GlobalProtect\nVPN not connecting"
    assert build_text(["Printer jam", "printer   JAM", "tray 2"]) == "Printer jam\ntray 2"
    assert canonical("Configuration item") == "cmdb_ci" and canonical(" Short-Description ") == "short_description"


def test_linking_is_transitive_across_parents_and_problems(tmp_path):
    rows = [
        ["INC1", "a", "", "", "PRB9", ""],
        ["INC2", "b", "", "", "", "INC1"],     # child of INC1
        ["INC3", "c", "", "", "", "INC2"],     # grandchild, no problem of its own
        ["INC4", "d", "", "", "PRB9", ""],     # same problem, no parent link
        ["INC5", "e", "", "", "", "INC404"],   # parent not in the export ...
        ["INC6", "f", "", "", "", "INC404"],   # ... shared with a sibling
        ["INC7", "g", "", "", "", ""],
    ]
    groups = groups_of(read_tickets(write_csv(tmp_path / "l.csv", FIELDS, rows), group_by="parent_incident"))
    assert groups["INC1"] == groups["INC2"] == groups["INC3"] == groups["INC4"] == "problem:PRB9"
    assert groups["INC5"] == groups["INC6"] == "ticket:INC404"
    assert groups["INC7"] == "ticket:INC7"
    assert list(link_components([["a"], ["b"], ["c", "a"], ["b"], []])) == [0, 1, 0, 1, 2]


def test_empty_texts_and_groups_are_skipped_and_counted(tmp_path):
    rows = [["one", "A"], ["", "A"], ["   ", "B"], ["two", ""], ["three", "B"]]
    table = read_tickets(write_csv(tmp_path / "e.csv", ["text", "label"], rows), ["text"], "label")
    assert list(table.frame["text"]) == ["one", "three"]
    notes = " ".join(table.notes)
    assert "skipped 2 rows with an empty text (rows 3, 4)" in notes
    assert "skipped 1 rows with an empty label (rows 5)" in notes


def test_mask_pii_applies_to_the_texts(tmp_path):
    rows = [["call me on +44 20 7946 0958, jane.roe@example.com", "A"], ["VPN 10.2.3 fails", "A"]]
    table = read_tickets(write_csv(tmp_path / "p.csv", ["text", "label"], rows), ["text"], "label", mask_pii=True)
    assert list(table.frame["text"]) == ["call me on [PHONE], [EMAIL]", "VPN 10.2.3 fails"]
    assert "masked in 1 of 2 texts" in table.notes[-1]


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, list[str], str]]:
    """name -> (file, extra CLI args, words the one-line error must contain)."""
    good = ["--text-column", "text", "--group-by", "label"]
    (tmp / "empty.csv").write_bytes(b"")
    (tmp / "blank.csv").write_bytes(b"  \n\n ")
    (tmp / "binary.csv").write_bytes(b"\x00\x01\x02\xff" * 200)
    (tmp / "bad.json").write_text('{"result": [{"text": "a", }]}', encoding="utf-8")
    (tmp / "noresult.json").write_text('{"rows": []}', encoding="utf-8")
    (tmp / "notobjects.json").write_text('{"result": [1, 2]}', encoding="utf-8")
    (tmp / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": oops}\n', encoding="utf-8")
    (tmp / "quote.csv").write_text('text,label\n"unterminated,A\nmore,B\n', encoding="utf-8")
    (tmp / "ragged.csv").write_text("text,label\nfine,A\ntoo,many,fields\n", encoding="utf-8")
    (tmp / "header.csv").write_text("text,label\n", encoding="utf-8")
    (tmp / "allempty.csv").write_text("text,label\n,A\n  ,B\n", encoding="utf-8")
    (tmp / "bad.xlsx").write_bytes(b"PK\x03\x04 this is not really a zip file")
    (tmp / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp / "twice.csv").write_text("Short description,short_description,label\na,b,c\n", encoding="utf-8")
    (tmp / "ok.csv").write_text("text,topic_group\na,A\n", encoding="utf-8")
    (tmp / "onegroup.csv").write_text("text,label\n" + "".join(f"ticket {i},A\n" for i in range(30)), encoding="utf-8")
    (tmp / "fewgroups.csv").write_text("text,label\n" + "".join(f"ticket {i} about {g},{g}\n" for g in "AB" for i in
                                                               range(3)), encoding="utf-8")
    (tmp / "dir").mkdir()
    return {
        "missing": (tmp / "nope.csv", good, "not found"),
        "directory": (tmp / "dir", good, "directory"),
        "empty": (tmp / "empty.csv", good, "empty"),
        "whitespace only": (tmp / "blank.csv", good, "empty"),
        "binary": (tmp / "binary.csv", good, "binary"),
        "malformed json": (tmp / "bad.json", good, "malformed JSON at line 1"),
        "json without result": (tmp / "noresult.json", good, "'result'"),
        "json records not objects": (tmp / "notobjects.json", good, "record 1"),
        "malformed jsonl": (tmp / "bad.jsonl", good, "line 2"),
        "unterminated quote": (tmp / "quote.csv", good, "malformed CSV"),
        "too many fields": (tmp / "ragged.csv", good, "row 3"),
        "header only": (tmp / "header.csv", good, "no tickets"),
        "all texts empty": (tmp / "allempty.csv", good, "no row has both a text"),
        "damaged xlsx": (tmp / "bad.xlsx", good, "XLSX"),
        "old xls": (tmp / "old.xls", good, ".xlsx"),
        "two columns, one meaning": (tmp / "twice.csv", ["--group-by", "label"], "both mean"),
        "misspelt group column": (tmp / "ok.csv", ["--text-column", "text", "--group-by", "topic_grup"],
                                  "did you mean 'topic_group'"),
        "misspelt text column": (tmp / "ok.csv", ["--text-column", "txt", "--group-by", "topic_group"],
                                 "did you mean 'text'"),
        "no group column": (tmp / "ok.csv", ["--text-column", "text"], "--group-by"),
        "one group": (tmp / "onegroup.csv", good, "one group"),
        "too few groups to split": (tmp / "fewgroups.csv", [*good, "--split-by", "group"], "too few groups to split"),
    }


def test_bad_inputs_end_in_one_line_and_leave_nothing(tmp_path, capsys):
    for name, (path, args, words) in _bad_inputs(tmp_path).items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        code = main(["pairs", str(path), "-o", str(out), "--difficulty", "tfidf", *args])
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert len(err.splitlines()) == 1 and err.startswith("error: "), (name, err)
        assert words in err, (name, err)
        assert "Traceback" not in err
        assert not out.exists(), name
        assert not list(tmp_path.glob(f".{out.name}*")), name


def test_read_errors_name_the_row(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text('text,label\n"a, quoted",A\n"multi\nline",B\nx,y,z\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"row 4 \(line 5\) has 3 fields, the header has 2"):
        read_tickets(path, ["text"], "label")
