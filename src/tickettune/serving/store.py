"""The service's own state in a relational database: tickets posted to it or synced from an instance, their
vectors per model, the sync's high-water mark; later tables (feedback, ...) join the same metadata.

SQLite by default (one file, WAL journal, no server to start), PostgreSQL when the store is a
`postgresql://` URL, both through SQLAlchemy Core: one set of table definitions and statements for both,
and the upsert each dialect needs (`INSERT ... ON CONFLICT`). Core rather than the ORM because the
service moves rows in batches into numpy and pandas, never as objects.

Every change to a ticket gets the next number of one sequence (`seq`) inside a transaction that holds the
store's write lock (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a transaction-level advisory lock), so `seq`
order is commit order and a process that has applied everything up to `seq` N takes in what others wrote
with one indexed query (`Store.changes(N)`): processes on other hosts see each other's tickets at their
next request after the commit. A commit is durable before the service answers (SQLite `synchronous=FULL`).

Migrations: a `schema_version` row in `tickettune_meta` and the ordered functions in `MIGRATIONS`, run at
open under the write lock (so processes starting together upgrade once). Alembic was considered: its
value is autogenerating and running scripts by hand for a schema a DBA owns; this schema belongs to the
program, which must upgrade it itself at start from any of several processes, which Alembic leaves to the
caller (its own lock and version check) anyway. A new table is one more function at the end of MIGRATIONS.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from tickettune.core.errors import UserError

SQLITE_NAME = "store.sqlite"
LOCK_KEY = 0x7469636B  # the advisory lock's number on PostgreSQL ("tick")

metadata = MetaData()
meta = Table("tickettune_meta", metadata,
             Column("key", String(200), primary_key=True),
             Column("value", Text, nullable=False))
tickets = Table("tickettune_tickets", metadata,
                Column("number", String(100), primary_key=True),
                Column("seq", BigInteger, nullable=False, unique=True),
                Column("fields", Text, nullable=False),  # JSON object of field: text, `text` included
                Column("deleted", Boolean, nullable=False),
                Column("source", String(16), nullable=False),  # posted, synced or imported
                Column("changed_at", DateTime(timezone=True), nullable=False))
vectors = Table("tickettune_vectors", metadata,
                Column("model", String(32), primary_key=True),  # model_key of the model folder
                Column("number", String(100), primary_key=True),
                Column("digest", LargeBinary(8), nullable=False),  # of the text the vector encodes
                Column("vector", LargeBinary, nullable=False))  # float32, little-endian
sync_state = Table("tickettune_sync", metadata,
                   Column("source", String(500), primary_key=True),
                   Column("mark_updated_on", String(32)),
                   Column("mark_sys_id", String(32)),
                   Column("last_attempt_at", DateTime(timezone=True)),
                   Column("last_success_at", DateTime(timezone=True)),
                   Column("last_error", Text),
                   Column("changed", Integer))


def _create(*tables: Table) -> Callable[[Connection], None]:
    return lambda conn: metadata.create_all(conn, tables=list(tables))


# Version n is reached by MIGRATIONS[n - 1]. 1: what the folder store held; 2: the sync's state.
MIGRATIONS: list[Callable[[Connection], None]] = [_create(tickets, vectors), _create(sync_state)]
SCHEMA_VERSION = len(MIGRATIONS)


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()[:8]


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class Change:
    """One ticket's latest state in the store: its fields (None when deleted) and its place in the change order."""

    number: str
    seq: int
    fields: Optional[dict]


def store_url(location: str) -> tuple[str, Optional[Path]]:
    """A SQLAlchemy URL for `--store`, and the folder when it names one (where an old folder store may lie).

    A URL (`sqlite:///file`, `postgresql://user@host/db`) is used as given (PostgreSQL through psycopg 3);
    a path ending in .sqlite or .db is that SQLite file; any other path is a folder holding store.sqlite.
    """
    if "://" in location:
        try:
            url = make_url(location)
        except ArgumentError:
            raise UserError(f"--store {location}: not a database URL; pass sqlite:///FILE or "
                            "postgresql://USER@HOST/DB") from None
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        if not url.drivername.startswith(("sqlite", "postgresql")):
            raise UserError(f"--store: {url.drivername} databases are not supported; use sqlite:/// or postgresql://")
        return url.render_as_string(hide_password=False), None
    path = Path(location).expanduser()
    if path.suffix.lower() in (".sqlite", ".db") and not path.is_dir():
        return f"sqlite:///{path}", None
    return f"sqlite:///{path / SQLITE_NAME}", path


def open_engine(url: str) -> Engine:
    """An engine for the store's URL; SQLite gets WAL, full sync, a busy timeout and `BEGIN IMMEDIATE` for writes."""
    if url.startswith("sqlite"):
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def on_connect(dbapi_connection, record):
            dbapi_connection.isolation_level = None  # transactions begun below, by SQLAlchemy's "begin" event
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def on_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    """The service's tables in one database; `Store.open("sqlite:///x.sqlite")` or `Store.open("folder")`.

    `engine` is there for other modules' tables (defined on `metadata`, created by a MIGRATIONS entry).
    """

    def __init__(self, engine: Engine, folder: Optional[Path] = None):
        self.engine = engine
        self.folder = folder

    @classmethod
    def open(cls, location: str) -> "Store":
        url, folder = store_url(location)
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot use the ticket store {folder} ({exc.strerror or exc}); make it writable "
                                "or pass another --store") from None
        store = cls(open_engine(url), folder)
        store.upgrade()
        return store

    @property
    def url(self) -> str:
        """The database URL, password hidden (for logs and /health)."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def _fail(self, exc: SQLAlchemyError) -> UserError:
        reason = " ".join(str(getattr(exc, "orig", exc) or exc).split())[:200]
        return UserError(f"cannot use the store {self.url} ({reason}); check that the database is reachable and "
                         "writable, or pass another --store")

    def _write(self):
        """A transaction holding the store's write lock (see the module docstring)."""
        store = self

        class Writing:
            def __enter__(self):
                self.conn = store.engine.connect().execution_options(write=True)
                self.transaction = self.conn.begin()
                if store.engine.dialect.name == "postgresql":
                    self.conn.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))
                return self.conn

            def __exit__(self, kind, exc, tb):
                try:
                    if kind is None:
                        self.transaction.commit()
                    else:
                        self.transaction.rollback()
                finally:
                    self.conn.close()

        return Writing()

    def _run(self, work: Callable[[], object]):
        try:
            return work()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None

    # --- schema ---

    def upgrade(self) -> int:
        """Bring the schema to SCHEMA_VERSION (from none, or any older version); the version it was at."""
        def work() -> int:
            with self._write() as conn:
                metadata.create_all(conn, tables=[meta])
                row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
                version = int(row[0]) if row else 0
                if version > SCHEMA_VERSION:
                    raise UserError(f"the store {self.url} is at schema version {version}, newer than this "
                                    f"tickettune's {SCHEMA_VERSION}; upgrade tickettune or pass another --store")
                for step in MIGRATIONS[version:]:
                    step(conn)
                if version != SCHEMA_VERSION:
                    _upsert(conn, meta, [{"key": "schema_version", "value": str(SCHEMA_VERSION)}], ["key"])
                return version
        return self._run(work)

    def has_key(self, key: str) -> bool:
        """Whether `tickettune_meta` holds `key` (e.g. a `write(once=key)` was committed)."""
        with self.engine.connect() as conn:
            return conn.execute(select(meta.c.key).where(meta.c.key == key)).first() is not None

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar_one())

    # --- tickets ---

    def changes(self, after: int = 0) -> list[Change]:
        """Every ticket changed after `seq` `after`, in change order."""
        def work() -> list[Change]:
            with self.engine.connect() as conn:
                rows = conn.execute(select(tickets.c.number, tickets.c.seq, tickets.c.fields, tickets.c.deleted)
                                    .where(tickets.c.seq > after).order_by(tickets.c.seq)).all()
            return [Change(number, seq, None if deleted else json.loads(fields)) for number, seq, fields, deleted in rows]
        return self._run(work)

    def last_seq(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(tickets.c.seq), 0))).scalar_one())

    def write(self, records: list[dict], *, source: str, model: str, vectors: Optional[np.ndarray] = None,
              deleted: Iterable[str] = (), after: int = 0, once: Optional[str] = None) -> tuple[list[Change], int]:
        """Add or replace `records` (each with its `number` and `text`; `vectors` one per record under `model`)
        and mark `deleted` numbers deleted, in one transaction.

        Returns the changes others committed after `after` (to apply before these) and the last `seq` now.
        With `once`, nothing is written when a write with that key was committed before (the key is kept).
        """
        deleted = list(deleted)

        def work() -> tuple[list[Change], int]:
            with self._write() as conn:
                if once is not None and conn.execute(select(meta.c.key).where(meta.c.key == once)).first():
                    return [], after
                rows = conn.execute(select(tickets.c.number, tickets.c.seq, tickets.c.fields, tickets.c.deleted)
                                    .where(tickets.c.seq > after).order_by(tickets.c.seq)).all()
                earlier = [Change(n, s, None if d else json.loads(f)) for n, s, f, d in rows]
                seq = conn.execute(select(func.coalesce(func.max(tickets.c.seq), 0))).scalar_one()
                at = now()
                changed = []
                for record in records:
                    seq += 1
                    changed.append({"number": record["number"], "seq": seq, "deleted": False, "source": source,
                                    "fields": json.dumps(record, ensure_ascii=False), "changed_at": at})
                for number in deleted:
                    seq += 1
                    changed.append({"number": number, "seq": seq, "deleted": True, "source": source, "fields": "{}",
                                    "changed_at": at})
                if changed:
                    _upsert(conn, tickets, changed, ["number"])
                if vectors is not None and len(records):
                    self._put_vectors(conn, model, [r["number"] for r in records], [r["text"] for r in records],
                                      vectors)
                if once is not None:
                    _upsert(conn, meta, [{"key": once, "value": at.isoformat()}], ["key"])
                return earlier, int(seq)
        return self._run(work)

    # --- vectors ---

    def vectors(self, model: str, numbers: list[str]) -> dict[str, tuple[bytes, np.ndarray]]:
        """The stored (digest, vector) of each of `numbers` that has one under `model`."""
        def work():
            found = {}
            with self.engine.connect() as conn:
                for start in range(0, len(numbers), 5000):  # bound the statement's parameters
                    chunk = numbers[start:start + 5000]
                    for number, key, blob in conn.execute(
                            select(vectors.c.number, vectors.c.digest, vectors.c.vector)
                            .where(vectors.c.model == model, vectors.c.number.in_(chunk))):
                        found[number] = (bytes(key), np.frombuffer(blob, dtype="<f4"))
            return found
        return self._run(work)

    def put_vectors(self, model: str, numbers: list[str], texts: list[str], values: np.ndarray) -> None:
        def work():
            with self.engine.begin() as conn:
                self._put_vectors(conn, model, numbers, texts, values)
        self._run(work)

    @staticmethod
    def _put_vectors(conn: Connection, model: str, numbers: list[str], texts: list[str], values: np.ndarray) -> None:
        rows = [{"model": model, "number": n, "digest": digest(t), "vector": np.asarray(v, "<f4").tobytes()}
                for n, t, v in zip(numbers, texts, values)]
        for start in range(0, len(rows), 5000):
            _upsert(conn, vectors, rows[start:start + 5000], ["model", "number"])

    # --- sync state ---

    def sync_state(self, source: str) -> Optional[dict]:
        with self.engine.connect() as conn:
            row = conn.execute(select(sync_state).where(sync_state.c.source == source)).mappings().first()
        return dict(row) if row else None

    def record_sync(self, source: str, *, mark: Optional[tuple[str, str]] = None, error: Optional[str] = None,
                    changed: int = 0) -> None:
        """After a sync attempt: its time, and either the new mark (success) or the error (the mark stays)."""
        def work():
            with self._write() as conn:
                row = conn.execute(select(sync_state).where(sync_state.c.source == source)).mappings().first()
                values = dict(row) if row else {"source": source}
                values.update(last_attempt_at=now(), last_error=error)
                if error is None:
                    values.update(last_success_at=values["last_attempt_at"], changed=changed)
                    if mark is not None:
                        values.update(mark_updated_on=mark[0], mark_sys_id=mark[1])
                _upsert(conn, sync_state, [values], ["source"])
        self._run(work)


def _upsert(conn: Connection, table: Table, rows: list[dict], keys: list[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, in the connection's dialect."""
    others = tuple(c.name for c in table.columns if c.name not in keys and c.name in rows[0])
    conn.execute(_upsert_statement(conn.dialect.name, table, tuple(keys), others), rows)


@functools.lru_cache(maxsize=64)
def _upsert_statement(dialect: str, table: Table, keys: tuple[str, ...], others: tuple[str, ...]):
    # Built once per shape: constructing it costs more than running it for one row.
    from sqlalchemy.dialects import postgresql, sqlite

    insert: Callable[[Table], Any] = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table)
    return statement.on_conflict_do_update(index_elements=list(keys), set_={c: statement.excluded[c] for c in others})
