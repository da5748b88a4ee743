"""Whether charset_normalizer could replace read_text_file's encoding fallback (issue 18): same text, and time.

    python benchmarks/encodings.py --record

Decodes a few hand-made exports (UTF-8, UTF-8 and UTF-16 with a BOM, cp1252 short and longer, latin-1 bytes
cp1252 leaves undefined) both ways and prints whether the texts are identical, then times both on the 38k-ticket
file (../shared/data/it-service-tickets/tickets.csv.gz, unpacked once beforehand so only the decoding counts).
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import timeit
from pathlib import Path

import charset_normalizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402
from tickettune.core.textio import read_text_file  # noqa: E402

TICKETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "it-service-tickets" / "tickets.csv.gz"
CP1252_ROWS = "".join(f"{i},Drucker im Büro €{i} – Papierstau, Größe “A4”\n" for i in range(200))
SAMPLES = {
    "UTF-8": "id,text\n1,Outlook stürzt ab – Fehler 0x800CCC0E\n".encode("utf-8"),
    "UTF-8 with BOM": "\ufeffid,text\n1,Café printer jam\n".encode("utf-8"),
    "UTF-16 with BOM": "id,text\n1,Café printer jam\n".encode("utf-16"),
    "cp1252, one row": "id,text\n1,Café – printer “jam”\n".encode("cp1252"),
    "cp1252, 200 rows": f"id,text\n{CP1252_ROWS}".encode("cp1252"),
    "latin-1 (0x81: undefined in cp1252)": b"id,text\n1,caf\xe9 \x81 jam\n",
}


def guessed(raw: bytes) -> tuple[str, str]:
    best = charset_normalizer.from_bytes(raw).best()
    return ("", "no guess") if best is None else (str(best), best.encoding)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="append the figures to RESULTS.md")
    args = parser.parse_args()
    lines = ["| file | read_text_file | charset_normalizer guesses | same text |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        for name, raw in SAMPLES.items():
            path = Path(folder) / "export.csv"
            path.write_bytes(raw)
            text, encoding = guessed(raw)
            ours = read_text_file(path)
            lines.append(f"| {name} | {ours.splitlines()[-1][:30]!r} | {encoding}: {text.splitlines()[-1][:30]!r} | "
                         f"{'yes' if text == ours else 'no'} |")
    if TICKETS.is_file():
        raw = gzip.decompress(TICKETS.read_bytes())
        ours = min(timeit.repeat(lambda: raw.decode("utf-8-sig"), number=1, repeat=5))
        theirs = min(timeit.repeat(lambda: str(charset_normalizer.from_bytes(raw).best()), number=1, repeat=5))
        lines += ["", f"{TICKETS.name} ({len(raw):,} bytes unpacked), best of 5: read_text_file's decode "
                  f"{ours * 1000:.1f} ms, charset_normalizer {theirs * 1000:.1f} ms; same text: "
                  f"{'yes' if guessed(raw)[0] == raw.decode('utf-8-sig') else 'no'}."]
    body = "\n".join(lines)
    print(body)
    if args.record:
        _results.append_under("Text encodings", body)


if __name__ == "__main__":
    main()
