"""`tickettune pull`: a table of a ServiceNow instance into a ticket file, in full or (`since_last`) only what
changed since the file's high-water mark.

The file is Table API JSON, `{"result": [...]}`, which every ticket reader here takes (each field is
`{"display_value", "value"}`, as `sysparm_display_value=all` gives it, and readers use the display value),
plus two keys the readers ignore: `removed` (records that were in an earlier pull and are no longer on the
instance or no longer match the query: kept aside, with when that was seen, not read as tickets) and
`pull` (instance, table, query, fields and the high-water mark). One file, replaced atomically, so the
records and the mark can never disagree and an interrupted pull leaves the previous file as it was.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from tickettune.core.errors import UserError
from tickettune.sources.servicenow import DEFAULT_PAGE, Mark, TableClient, raw

FORMAT = 1
# A change is stamped when its transaction starts and may commit a little later: re-reading this much
# before the mark catches such late commits (what was already read is recognised by its version and skipped).
OVERLAP_SECONDS = 5
TAIL_PASSES = 5
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def now_text() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime(TIME_FORMAT)


def before(updated_on: str, seconds: int) -> Mark:
    """The keyset position just before every record stamped `seconds` before `updated_on`."""
    try:
        moment = dt.datetime.strptime(updated_on, TIME_FORMAT) - dt.timedelta(seconds=seconds)
    except ValueError:
        return Mark(updated_on, "")
    return Mark(moment.strftime(TIME_FORMAT), "")


@dataclass
class Source:
    """Where records come from: an instance's table, an encoded query and the fields to read."""

    instance: str
    table: str = "incident"
    query: str = ""
    fields: Optional[list[str]] = None
    page_size: int = DEFAULT_PAGE


@dataclass
class Fetched:
    """What one read brought: the new or changed records by sys_id, the mark after them, and counts."""

    records: dict[str, dict] = field(default_factory=dict)
    mark: Optional[Mark] = None
    received: int = 0
    unchanged: int = 0
    total: int = -1


def fetch_changes(client: TableClient, source: Source, *, since: Optional[Mark], versions: dict[str, str],
                  progress: Callable[[int, int], None] = lambda done, total: None) -> Fetched:
    """Every record of `source` changed after `since` (all when None) whose version (`sys_updated_on`) differs
    from `versions[sys_id]`, the newest copy of each.

    A record changed while the read was at the same second (sys_updated_on has one-second resolution) can
    land behind the read's position and be passed; such records are stamped at or after the second the read
    began (the instance's Date header), so when the read got that far, what was stamped since is read again
    (already-read versions skipped) until nothing new comes."""
    fetched = Fetched(mark=since)
    seen = dict(versions)
    start = before(since.updated_on, OVERLAP_SECONDS) if since else None

    def on_total(total: int) -> None:
        if fetched.total < 0:
            fetched.total = total

    for _ in range(TAIL_PASSES):
        new = 0
        for page in client.read(source.table, query=source.query, fields=source.fields, page_size=source.page_size,
                                after=start, on_total=on_total):
            for record in page:
                fetched.received += 1
                sys_id, version = raw(record.get("sys_id")), raw(record.get("sys_updated_on"))
                if seen.get(sys_id) == version:
                    fetched.unchanged += 1
                    continue
                seen[sys_id] = version
                fetched.records[sys_id] = record
                new += 1
            last = Mark.of(page[-1])
            if fetched.mark is None or last.key() > fetched.mark.key():
                fetched.mark = last
            progress(len(fetched.records), fetched.total)
        began = client.read_started
        if not new or fetched.mark is None or (began is not None and fetched.mark.updated_on < began):
            break
        start = Mark(began, "") if began is not None else before(fetched.mark.updated_on, 1)
    return fetched


def read_pull_file(path: Path) -> dict:
    """An earlier pull's file: its records, removed records and pull state; a UserError naming what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run `tickettune pull` without --since-last first") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not readable as a pull file ({exc}); pull again without --since-last") from None
    if not isinstance(data, dict) or not isinstance(data.get("pull"), dict) or not isinstance(data.get("result"), list):
        raise UserError(f"{path}: has no pull state (not written by `tickettune pull`); pull without --since-last")
    return data


def pull_state(path: Path) -> tuple[Optional[dict], dict[str, str]]:
    """The `pull` part of a pull file (instance, table, query, mark) and each record's version (sys_id ->
    sys_updated_on); (None, {}) for any other ticket file."""
    try:
        with path.open("rb") as handle:
            if handle.read(1) != b"{":
                return None, {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, {}
    state = data.get("pull") if isinstance(data, dict) else None
    if not isinstance(state, dict) or not isinstance(data.get("result"), list):
        return None, {}
    return state, {raw(r.get("sys_id")): raw(r.get("sys_updated_on")) for r in data["result"] if isinstance(r, dict)}


def write_atomically(path: Path, data: dict) -> None:
    """Write JSON to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=parent, prefix=f".{path.name}.",
                                             suffix=".tmp", delete=False)
    except OSError as exc:
        raise UserError(f"cannot write beside {path} ({exc.strerror or exc}); choose a writable -o") from None
    try:
        with handle:
            json.dump(data, handle, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        # The temporary file is private (0600); the result gets the old file's mode, or the umask's.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(handle.name, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~umask)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


@dataclass
class PullSummary:
    records: int
    changed: int
    received: int
    unchanged: int
    removed: int
    requests: int
    retries: int
    seconds: float


def pull(client: TableClient, source: Source, out: Path, *, since_last: bool = False,
         progress: Callable[[int, int], None] = lambda done, total: None) -> PullSummary:
    """Read `source` into `out` (or, `since_last`, merge what changed since `out`'s mark into it), atomically."""
    started = time.perf_counter()
    records: dict[str, dict] = {}
    removed: dict[str, dict] = {}
    since = None
    if since_last:
        data = read_pull_file(out)
        state = data["pull"]
        asked = {"instance": client.instance, "table": source.table, "query": source.query}
        differs = [k for k, v in asked.items() if state.get(k) != v]
        if differs:
            raise UserError(f"{out}: was pulled with another {', '.join(differs)} "
                            f"({', '.join(repr(state.get(k)) for k in differs)}); pull to another -o or drop --since-last")
        source.fields = source.fields or state.get("fields")
        records = {raw(r.get("sys_id")): r for r in data["result"]}
        removed = {r["sys_id"]: r for r in data.get("removed", []) if isinstance(r, dict) and "sys_id" in r}
        mark = state.get("mark") or {}
        since = Mark(mark.get("updated_on", ""), mark.get("sys_id", "")) if mark.get("updated_on") else None
    versions = {sys_id: raw(r.get("sys_updated_on")) for sys_id, r in records.items()}
    fetched = fetch_changes(client, source, since=since, versions=versions, progress=progress)
    records.update(fetched.records)
    for sys_id in fetched.records:
        removed.pop(sys_id, None)
    # Deleted records leave no trace in the table, and records that stop matching the query stop coming:
    # a listing of the sys_ids that match now (sys_id only, 10,000 a page) tells both.
    present = client.keys(source.table, query=source.query)
    seen_at = now_text()
    gone = [s for s in records if s not in present]
    for sys_id in gone:
        record = records.pop(sys_id)
        removed[sys_id] = {"sys_id": sys_id, "number": raw(record.get("number")), "removed_seen": seen_at,
                           "reason": "deleted on the instance or no longer matches the query"}
    ordered = sorted(records.values(), key=lambda r: Mark.of(r).key())
    mark = fetched.mark or since
    write_atomically(out, {
        "result": ordered, "removed": list(removed.values()),
        "pull": {"format": FORMAT, "instance": client.instance, "table": source.table, "query": source.query,
                 "fields": source.fields, "mark": asdict(mark) if mark else None, "pulled_at": seen_at,
                 "records": len(ordered)}})
    return PullSummary(records=len(ordered), changed=len(fetched.records), received=fetched.received,
                       unchanged=fetched.unchanged, removed=len(gone), requests=client.requests,
                       retries=client.retried, seconds=time.perf_counter() - started)
