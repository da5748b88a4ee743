"""`serve --sync-from URL`: keep the served tickets in step with an instance's table.

Each sync reads what changed since the store's high-water mark (`pull.fetch_changes`: keyset paging, only
records whose `sys_updated_on` moved), lists the sys_ids that match now (to find deleted records), and
hands both to the model thread, which encodes only tickets whose text changed (`LiveTickets.upsert`) and
leaves deleted ones out of every search (`LiveTickets.delete`). The mark moves, in the store, only after
the changes are applied, so a failed or interrupted sync is read again by the next; until then the service
goes on with the last good index and /health says what went wrong.

The first mark is the ticket file's own when `tickettune pull` wrote it from the same table and query
(so a service started on a fresh pull reads only what changed since), else the whole table is read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Awaitable, Callable, Optional
from urllib.parse import parse_qs, urlsplit

from tickettune.core.errors import UserError
from tickettune.serving.store import Store
from tickettune.sources.pull import Source, fetch_changes, pull_state
from tickettune.sources.servicenow import Credentials, Mark, TableClient, instance_url, raw

log = logging.getLogger("uvicorn.error").getChild("tickettune")
CHUNK = 500  # records per model-thread job, so that searches get their turn during a large sync
UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_every(text: str) -> float:
    """'5m', '30s', '1h' or plain seconds, as seconds (at least 1)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not found or float(found.group(1)) * UNITS[found.group(2) or "s"] < 1:
        raise UserError(f"--every {text}: expected a time such as 30s, 5m or 1h (at least 1 s)")
    return float(found.group(1)) * UNITS[found.group(2) or "s"]


def parse_source(url: str) -> Source:
    """An instance URL (the incident table) or a Table API URL: `https://acme.service-now.com/api/now/table/
    incident?sysparm_query=active=true`."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    table = "incident"
    base = parts.path
    found = re.search(r"/api/now(?:/v\d+)?/table/([^/]+)/?$", parts.path)
    if found:
        table, base = found.group(1), parts.path[:found.start()]
    query = parse_qs(parts.query).get("sysparm_query", [""])[0]
    return Source(instance=instance_url(f"{parts.scheme}://{parts.netloc}{base}"), table=table, query=query)


@dataclass
class Fetch:
    """A sync's reading: the changed records, the mark after them, the sys_ids matching now."""

    records: list[dict]
    mark: Optional[Mark]
    present: set[str]


@dataclass
class SyncStatus:
    """What /health tells of the sync."""

    source: str
    every_seconds: float
    last_attempt_at: Optional[str] = None
    last_success_at: Optional[str] = None
    lag_seconds: Optional[float] = None
    last_error: Optional[str] = None
    changed: int = 0
    removed: int = 0
    running: bool = False
    mark: Optional[str] = None


class Syncer:
    """Reads an instance's changes (`fetch`, any thread) and applies them (`apply`, on the model thread).

    Example: `Syncer(parse_source("https://acme.service-now.com"), Credentials.from_environment(), store,
    tickets_file=Path("incidents.json"))`.
    """

    def __init__(self, source: Source, credentials: Credentials, store: Store, *, every: float = 300.0,
                 tickets_file: Optional[Path] = None):
        self.source = source
        self.credentials = credentials
        self.store = store
        self.key = f"{source.instance}/api/now/table/{source.table}?{source.query}"
        self.status = SyncStatus(source=self.key, every_seconds=every)
        # The version of each record read (sys_id -> sys_updated_on), so that re-reading the overlap before
        # the mark (pull.OVERLAP_SECONDS) applies nothing twice; after a restart, only the file's are known.
        self.versions: dict[str, str] = {}
        self.first_mark = self._file_mark(tickets_file)
        self._lock = asyncio.Lock()
        self._refresh_status()

    def _file_mark(self, path: Optional[Path]) -> Optional[Mark]:
        state, versions = pull_state(path) if path else (None, {})
        if not state or (state.get("instance"), state.get("table"), state.get("query")) != (
                self.source.instance, self.source.table, self.source.query):
            return None
        self.versions = versions
        mark = state.get("mark") or {}
        if state.get("fields") and not self.source.fields:
            self.source.fields = state["fields"]
        return Mark(mark["updated_on"], mark.get("sys_id", "")) if mark.get("updated_on") else None

    def mark(self) -> Optional[Mark]:
        state = self.store.sync_state(self.key)
        if state and state.get("mark_updated_on"):
            return Mark(state["mark_updated_on"], state["mark_sys_id"] or "")
        return self.first_mark

    def fetch(self) -> Fetch:
        """Read the changes since the mark, and the sys_ids that match now (HTTP only; raises UserError)."""
        with TableClient(self.source.instance, self.credentials) as client:
            since = self.mark()
            fetched = fetch_changes(client, self.source, since=since, versions=self.versions)
            present = set(client.keys(self.source.table, query=self.source.query))
        return Fetch(records=list(fetched.records.values()), mark=fetched.mark or since, present=present)

    def apply(self, live, records: list[dict]) -> int:
        """Add or replace these records (model thread); how many. Records without a number or text are left
        out, as a ticket file's are."""
        if not records:
            return 0
        added, updated = live.upsert(records, source="synced", skip_incomplete=True)
        return added + updated

    def remove_absent(self, live, present: set[str]) -> int:
        """Mark deleted the live tickets from the instance whose sys_id no longer matches (model thread)."""
        gone = [number for sys_id, number in live.number_of_sys_id().items() if sys_id not in present]
        return live.delete(gone)

    async def sync_now(self, submit: Callable[[Callable], Awaitable]) -> dict:
        """One sync: read off the model thread, apply through `submit` (which runs `call(live)` on the model
        thread, as `serve.OnModelThread` does), in chunks; the status afterwards. Never raises: a failure is
        the status's `last_error`, and the index stays as it was before the failed part."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            self.status.running = True
            try:
                fetch = await loop.run_in_executor(None, self.fetch)
                changed = 0
                for start in range(0, len(fetch.records), CHUNK):
                    chunk = fetch.records[start:start + CHUNK]
                    changed += await submit(lambda live, chunk=chunk: self.apply(live, chunk))
                removed = await submit(lambda live: self.remove_absent(live, fetch.present))
                await loop.run_in_executor(None, self.succeeded, fetch, changed, removed)
            except UserError as exc:
                log.warning("sync from %s failed: %s", self.key, exc)
                await loop.run_in_executor(None, self.failed, str(exc))
            except Exception as exc:  # logged with its stack, never its message (it might quote a ticket)
                log.error("sync from %s failed: %s\n%s", self.key, type(exc).__name__,
                          "".join(traceback.format_tb(exc.__traceback__)).rstrip())
                await loop.run_in_executor(None, self.failed, f"internal error ({type(exc).__name__}); the server "
                                                              "log has the details")
            finally:
                self.status.running = False
            return self.health()

    async def run_every(self, submit: Callable[[Callable], Awaitable]) -> None:
        """Sync now, then every `every_seconds`, until cancelled."""
        while True:
            await self.sync_now(submit)
            await asyncio.sleep(self.status.every_seconds)

    def succeeded(self, fetch: Fetch, changed: int, removed: int) -> None:
        self.versions.update({raw(r.get("sys_id")): raw(r.get("sys_updated_on")) for r in fetch.records})
        mark = fetch.mark.key() if fetch.mark else None
        self.store.record_sync(self.key, mark=mark, changed=changed)
        self.status.removed = removed
        self._refresh_status()

    def failed(self, error: str) -> None:
        try:
            self.store.record_sync(self.key, error=error)
        except UserError:
            pass  # the store is down too: the status below still says what happened
        self._refresh_status(error)

    def _refresh_status(self, error: Optional[str] = None) -> None:
        try:
            state = self.store.sync_state(self.key) or {}
        except Exception:  # shown, not raised: /health must answer while the store is away
            state = {}
        status = self.status
        if error is not None:
            status.last_error = error
            status.last_attempt_at = _iso(dt.datetime.now(dt.timezone.utc))
        if state:
            status.last_attempt_at = _iso(state.get("last_attempt_at")) or status.last_attempt_at
            status.last_success_at = _iso(state.get("last_success_at"))
            status.last_error = state.get("last_error") if error is None else error
            status.changed = int(state.get("changed") or 0)
            status.mark = state.get("mark_updated_on")

    def health(self) -> dict:
        status = self.status
        if status.last_success_at:
            since = dt.datetime.fromisoformat(status.last_success_at)
            status.lag_seconds = round((dt.datetime.now(dt.timezone.utc) - since).total_seconds(), 1)
        return asdict(status)


def _iso(value) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if value.tzinfo is None:  # SQLite returns naive datetimes; they were written in UTC
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.isoformat(timespec="seconds")
