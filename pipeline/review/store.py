"""The decisions database: SQLAlchemy Core tables, SQLite in WAL mode unless another URL is configured.

Decisions keep their history: a reader's new decision on a scan marks the previous one superseded in the
same transaction, so an audit can replay who changed what, while every count reads current rows only. A
partial unique index allows one current decision per reader and scan, whatever the number of writers.
Readers appear as pseudonyms only, so the database names no person.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    update,
)

DECISIONS = ("normal", "abnormal", "unsure", "skip")
metadata = MetaData()
decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("series_key", String(64), nullable=False, index=True),
    Column("reader", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("decision", String(16), nullable=False),
    Column("finding", Text, nullable=False, default=""),
    Column("seconds", Float),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("current", Boolean, nullable=False, default=True),
)
Index(
    "one_current_decision",
    decisions.c.series_key,
    decisions.c.reader,
    unique=True,
    sqlite_where=decisions.c.current,
    postgresql_where=decisions.c.current,
)
sessions = Table(
    "sessions",
    metadata,
    Column("digest", String(64), primary_key=True),  # sha256 of the cookie: a stolen database opens nothing
    Column("reader", String(64), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Decision:
    series_key: str
    reader: str
    role: str
    decision: str
    finding: str
    seconds: float | None
    decided_at: dt.datetime


def open_database(url: str) -> Engine:
    """An engine with the tables created; SQLite gets WAL (readers never block the writer) and waits for
    a lock instead of failing when two readers decide at once."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cursor = conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

    metadata.create_all(engine)
    return engine


def record(engine: Engine, decision: Decision) -> None:
    """One transaction: the reader's previous decision on the scan superseded, this one inserted. The
    update comes first so SQLite takes its write lock before anything is read."""
    with engine.begin() as conn:
        conn.execute(
            update(decisions)
            .where(decisions.c.series_key == decision.series_key, decisions.c.reader == decision.reader)
            .where(decisions.c.current)
            .values(current=False)
        )
        conn.execute(insert(decisions).values(**decision.__dict__, current=True))


def current(engine: Engine, series_key: str | None = None, reader: str | None = None) -> list[Decision]:
    """Every reader's current decision on every scan, oldest first; only one scan's or one reader's when
    given (opening a scan asks for one row, not the whole table)."""
    columns = [decisions.c[name] for name in Decision.__dataclass_fields__]
    query = select(*columns).where(decisions.c.current)
    if series_key is not None:
        query = query.where(decisions.c.series_key == series_key)
    if reader is not None:
        query = query.where(decisions.c.reader == reader)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(decisions.c.id)).all()
    return [Decision(*row) for row in rows]
