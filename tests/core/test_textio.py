"""read_text_file decodes the encodings exports use as they were written: UTF-8 (with or without a BOM), UTF-16
with a BOM, cp1252 (short or long: no guessing from the bytes' statistics), and latin-1 for the rest."""

from __future__ import annotations

import gzip

import pytest

from tickettune.core.errors import UserError
from tickettune.core.textio import read_text_file

ROWS = "".join(f"{i},Drucker im Büro €{i} – Papierstau, Größe “A4”\n" for i in range(200))


@pytest.mark.parametrize(("text", "encoding"), [
    ("id,text\n1,Outlook stürzt ab – Fehler\n", "utf-8"),
    ("id,text\n1,Café printer jam\n", "utf-8-sig"),
    ("id,text\n1,Café printer jam\n", "utf-16"),
    ("id,text\n1,Café – printer “jam”\n", "cp1252"),
    (f"id,text\n{ROWS}", "cp1252"),            # charset_normalizer takes this for mac_latin2
    ("id,text\n1,café \x81 jam\n", "latin-1"),  # 0x81 is undefined in cp1252 (charset_normalizer: cp1256)
])
def test_each_encoding_reads_back_as_written(tmp_path, text, encoding):
    path = tmp_path / "export.csv"
    path.write_bytes(text.encode(encoding))
    assert read_text_file(path) == text
    packed = tmp_path / "export.csv.gz"
    packed.write_bytes(gzip.compress(text.encode(encoding)))
    assert read_text_file(packed) == text


def test_binary_and_empty_files_are_one_line_errors(tmp_path):
    (tmp_path / "blob").write_bytes(b"\x00\x01\x02" * 10)
    (tmp_path / "empty").write_bytes(b"  \n")
    with pytest.raises(UserError, match="binary file"):
        read_text_file(tmp_path / "blob")
    with pytest.raises(UserError, match="empty"):
        read_text_file(tmp_path / "empty")
