"""Agents' verdicts on suggestions, kept durably so they can train the next model.

Each verdict is one row of the `feedback` table (SQLAlchemy Core, so the same code runs on SQLite, the
default, and PostgreSQL): the query (an indexed ticket's number, or the text an agent searched with), the
suggested ticket, the verdict and the agent. One row per (query, suggested, agent): the same verdict sent
again changes nothing, a new one replaces it (an upsert on the unique constraint, safe beside other server
processes writing the same database). Both texts are stored as they were indexed, so an export needs no
ticket file.

    >>> store = FeedbackStore.open("sqlite:///feedback.sqlite")                      # doctest: +SKIP
    >>> store.record(Verdict(query_text="VPN drops", suggested="INC0010042",
    ...                      suggested_text="VPN disconnects hourly", verdict="duplicate", agent="ana"))  # doctest: +SKIP
    'added'
    >>> store.export(Path("pairs.jsonl"))                                             # doctest: +SKIP
    1

The export is a pair file (text1, text2, label: duplicate 1, related 0.5, unrelated 0) that
`tickettune train --feedback FILE` reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Union

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    func,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from tickettune.core.errors import UserError

VERDICTS = ("duplicate", "related", "unrelated")
LABELS = {"duplicate": 1.0, "related": 0.5, "unrelated": 0.0}

metadata = MetaData()
feedback_table = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # The query's identity: its ticket number, or "text:" and a hash of the text searched with.
    Column("query_key", String(80), nullable=False),
    Column("query_number", String(64), nullable=True),
    Column("query_text", Text, nullable=False),
    Column("suggested", String(64), nullable=False),
    Column("suggested_text", Text, nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("agent", String(128), nullable=False, default=""),  # "" not NULL: NULLs never collide in a unique key
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("query_key", "suggested", "agent", name="feedback_once_per_agent"),
)


def default_url(store: Union[str, Path]) -> str:
    """The service's default feedback database: its store's own (`serve --store`: a folder, a SQLite file or a URL)."""
    from tickettune.serving.store import store_url

    return store_url(str(store))[0]


def query_key(number: Optional[str], text: str) -> str:
    return number if number else "text:" + hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:32]


@dataclass
class Verdict:
    """One agent's verdict on one suggestion: the query by number (query_number) and/or its text, the suggested
    ticket's number and text, and one of VERDICTS. Example: Verdict(query_text="VPN drops", suggested="INC1",
    suggested_text="VPN disconnects", verdict="unrelated", agent="ana")."""

    query_text: str
    suggested: str
    suggested_text: str
    verdict: str
    agent: str = ""
    query_number: Optional[str] = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise UserError(f"verdict: '{self.verdict}' is not one of {', '.join(VERDICTS)}")


class FeedbackStore:
    """The `feedback` table in a database given as an SQLAlchemy Engine or URL (created when missing)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        try:
            metadata.create_all(engine, tables=[feedback_table])
        except SQLAlchemyError as exc:
            raise UserError(f"cannot open the feedback database {engine.url.render_as_string(hide_password=True)} "
                            f"({type(getattr(exc, 'orig', None) or exc).__name__}); check --feedback-db") from None

    @classmethod
    def open(cls, url: str) -> "FeedbackStore":
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            engine = create_engine(url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise UserError(f"--feedback-db {url!r}: not a usable database URL ({exc}); pass sqlite:///FILE or "
                            "postgresql://USER@HOST/DB") from None
        return cls(engine)

    def _insert(self):
        from sqlalchemy.dialects import postgresql, sqlite

        inserts: dict[str, Callable[[Table], Any]] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
        dialect = self.engine.dialect.name
        if dialect not in inserts:
            raise UserError(f"feedback database: {dialect} is not supported; use SQLite or PostgreSQL")
        return inserts[dialect](feedback_table)

    def record(self, verdict: Verdict) -> str:
        """Store a verdict; 'added', 'updated' (another verdict replaced) or 'unchanged' (the same one again)."""
        key = query_key(verdict.query_number, verdict.query_text)
        now = datetime.now(timezone.utc)
        row = {"query_key": key, "query_number": verdict.query_number, "query_text": verdict.query_text,
               "suggested": verdict.suggested, "suggested_text": verdict.suggested_text, "verdict": verdict.verdict,
               "agent": verdict.agent, "created_at": now, "updated_at": now}
        where = (feedback_table.c.query_key == key) & (feedback_table.c.suggested == verdict.suggested) \
            & (feedback_table.c.agent == verdict.agent)
        with self.engine.begin() as connection:
            before = connection.execute(select(feedback_table.c.verdict).where(where)).scalar_one_or_none()
            if before == verdict.verdict:
                return "unchanged"
            insert = self._insert()
            connection.execute(insert.values(**row).on_conflict_do_update(
                index_elements=["query_key", "suggested", "agent"],
                set_={"verdict": insert.excluded.verdict, "updated_at": insert.excluded.updated_at,
                      "query_text": insert.excluded.query_text, "suggested_text": insert.excluded.suggested_text}))
        return "added" if before is None else "updated"

    def rows(self) -> list[dict]:
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(select(feedback_table).order_by(feedback_table.c.id))]

    def count(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(feedback_table)).scalar_one())

    def export(self, path: Path) -> int:
        """Write every verdict as a pair-file line (text1, text2, label, verdict, query_number, suggested, agent,
        updated_at) to `path`, atomically; the number written."""
        rows = self.rows()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                for row in rows:
                    out.write(json.dumps({
                        "text1": row["query_text"], "text2": row["suggested_text"], "label": LABELS[row["verdict"]],
                        "verdict": row["verdict"], "query_number": row["query_number"], "suggested": row["suggested"],
                        "agent": row["agent"], "updated_at": row["updated_at"].isoformat()}, ensure_ascii=False) + "\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return len(rows)
