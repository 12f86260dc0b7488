"""The labels store: every review kept once (by the sha256 of its text) with where it came from, every label with who
gave it, when and from where, and the reviews a server answered "unsure", waiting for a person.

Nothing is overwritten: a second opinion is a second row (disagreements stay visible), an undo is a row that
retracts an earlier one. Training reads each review's label by majority, then the latest (`label_of`).

An embedded SQLite file by default (WAL, every commit synced: a label is acknowledged only once it is on disk),
or any SQLAlchemy URL (`postgresql://…` for a team). One process writes at a time (`hold`): a second labelling
server is refused with the process that holds the store; readers (`critic train --data FILE.db`) need no hold.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from critic.data.reading import (
    LABEL_COLUMNS,
    TEXT_COLUMNS,
    Columns,
    DataError,
    pick_column,
    records,
    text_problem,
)
from critic.data.splits import text_hash

SCHEMA_VERSION = 2  # 1: reviews and labels; 2: + the queue of reviews a server sent back
ORIGINS = ("person", "import", "correction", "undo")  # correction: a person's label for a queued (served) review

metadata = sa.MetaData()
settings_table = sa.Table(
    "critic_store",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
reviews_table = sa.Table(
    "reviews",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),  # a file and its line, or "serve <model>"
    sa.Column("added_at", sa.Float, nullable=False),
)
labels_table = sa.Table(
    "labels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("review_id", sa.Integer, sa.ForeignKey("reviews.id"), nullable=False, index=True),
    sa.Column("label", sa.Text),  # null for an undo
    sa.Column("annotator", sa.Text, nullable=False),
    sa.Column("origin", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("retracts", sa.Integer, sa.ForeignKey("labels.id")),  # an undo: the label it takes back
    # what the page showed when the label was given: the model's suggestion, and why the review was picked
    sa.Column("model", sa.Text),
    sa.Column("suggestion", sa.Text),
    sa.Column("confidence", sa.Float),
    sa.Column("picked_for", sa.String(32)),
)
queue_table = sa.Table(
    "queue",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("review_id", sa.Integer, sa.ForeignKey("reviews.id"), nullable=False, index=True),
    sa.Column("reason", sa.String(16), nullable=False),  # unsure, or sample (the random share of the others)
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("suggestion", sa.Text, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("added_at", sa.Float, nullable=False),
)
TABLES_OF_VERSION = {1: (settings_table, reviews_table, labels_table), 2: (queue_table,)}
# A label stands unless it is an undo or an undo took it back (a subquery: no list of ids bound, however many).
UNDONE = sa.select(labels_table.c.retracts).where(labels_table.c.retracts.is_not(None))
STANDING = sa.and_(labels_table.c.origin != "undo", labels_table.c.id.not_in(UNDONE))
LABELLED = sa.select(labels_table.c.review_id).where(STANDING)  # the reviews with a standing label


class StoreError(DataError):
    """A store that cannot be used as asked; the message says why and what to do."""


class StoreHeld(StoreError):
    """Another process writes to this store."""


def url_of(where: str | Path) -> str:
    return str(where) if "://" in str(where) else f"sqlite:///{Path(where).resolve()}"


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    # WAL: readers (a training run) never block the writer; synchronous FULL: a commit survives a power cut
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=10000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


@dataclass
class ImportReport:
    """What an import did: reviews added, already present, labels taken, rows refused (line, problem)."""

    source: str
    added: int = 0
    present: int = 0
    labelled: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)

    def describe(self) -> str:
        said = f"{self.source}: {self.added:,} reviews added, {self.present:,} already in the store"
        if self.labelled:
            said += f", {self.labelled:,} labels imported"
        if self.refused:
            line, problem = self.refused[0]
            said += f"; {len(self.refused):,} rows skipped (the first: line {line}, {problem})"
        return said


class Store:
    """A labels store at `where` (a path or an SQLAlchemy URL). `create`: make it when absent, with `labels`."""

    def __init__(self, where: str | Path, create: bool = False, labels: Sequence[str] | None = None):
        self.url = url_of(where)
        self.name = str(where)
        self.sqlite = self.url.startswith("sqlite")
        if self.sqlite and not Path(self.url.removeprefix("sqlite:///")).exists():
            if not create:
                raise StoreError(f"{where}: no such labels store (`critic label FILE --store {where}` makes one)")
            if not Path(self.url.removeprefix("sqlite:///")).parent.is_dir():
                raise StoreError(f"{where}: no folder {Path(where).parent} to make the store in")
        self.engine = sa.create_engine(self.url)
        if self.sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._held = None
        self._schema(create)
        if labels:
            self.set_labels(labels)

    # ------------------------------------------------------------------------------------------- the schema

    def _schema(self, create: bool) -> None:
        with self.engine.begin() as connection:
            present = sa.inspect(connection).has_table(settings_table.name)
            if not present:
                # a file of other tables is someone's database: never written into (a server's may be shared)
                if sa.inspect(connection).get_table_names() and (self.sqlite or not create):
                    raise StoreError(f"{self.name}: a database, but not a critic labels store")
                metadata.create_all(connection)
                self._set(connection, "schema_version", SCHEMA_VERSION)
                self._set(connection, "created_at", time.time())
                return
            version = int(self._get(connection, "schema_version", 0))
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.name}: a labels store of schema {version}, written by a newer critic (this one reads up "
                    f"to {SCHEMA_VERSION}); upgrade critic"
                )
            if version < SCHEMA_VERSION:  # an older store: the tables added since, then the new version
                for added in range(version + 1, SCHEMA_VERSION + 1):
                    for table in TABLES_OF_VERSION[added]:
                        table.create(connection, checkfirst=True)
                self._set(connection, "schema_version", SCHEMA_VERSION)

    @staticmethod
    def _get(connection, key: str, default=None):
        value = connection.execute(sa.select(settings_table.c.value).where(settings_table.c.key == key)).scalar()
        return default if value is None else json.loads(value)

    @staticmethod
    def _set(connection, key: str, value) -> None:
        connection.execute(sa.delete(settings_table).where(settings_table.c.key == key))
        connection.execute(sa.insert(settings_table).values(key=key, value=json.dumps(value)))

    @property
    def schema_version(self) -> int:
        with self.engine.connect() as connection:
            return int(self._get(connection, "schema_version"))

    @property
    def labels(self) -> tuple[str, ...]:
        """The classes, in order; empty until a file or the user names them."""
        with self.engine.connect() as connection:
            return tuple(self._get(connection, "labels", []))

    def set_labels(self, labels: Sequence[str]) -> None:
        """Name the classes; a store that has them keeps them (a different set is an error naming both)."""
        labels = tuple(str(label) for label in labels)
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise StoreError(f"labels {', '.join(labels)}: a classifier needs two or more distinct classes")
        held = self.labels
        if held and held != labels:
            raise StoreError(f"{self.name} labels reviews as {', '.join(held)}, not {', '.join(labels)}")
        if not held:
            with self.engine.begin() as connection:
                self._set(connection, "labels", list(labels))

    # ------------------------------------------------------------------------------------------ one writer

    def hold(self, what: str = "critic label") -> None:
        """Make this process the store's one writer, or raise StoreHeld naming the process that is. Released when
        the process ends, however it ends (kill -9 included): an OS file lock for SQLite, a session's advisory
        lock for PostgreSQL."""
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "what": what, "since": time.time()}
        if self.sqlite:
            self._held = self._lock_file(holder)
        elif self.engine.dialect.name == "postgresql":
            self._held = self._advisory_lock(holder)
        with self.engine.begin() as connection:
            self._set(connection, "writer", holder)

    def _lock_file(self, holder: dict):
        import fcntl

        path = Path(self.url.removeprefix("sqlite:///")).with_suffix(".lock")
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            held = handle.read().strip()
            handle.close()
            raise StoreHeld(f"{self.name} is held by another process ({held or 'unknown'}); stop it first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {holder['pid']} on {holder['host']}, {holder['what']}")
        handle.flush()
        return handle

    def _advisory_lock(self, holder: dict):
        connection = self.engine.connect()
        key = int(text_hash(self.url)[:15], 16)  # a bigint, the same for every process naming this store
        if not connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
            connection.close()
            with self.engine.connect() as reader:
                held = self._get(reader, "writer", {})
            raise StoreHeld(
                f"{self.name} is held by process {held.get('pid')} on {held.get('host')} ({held.get('what')}); "
                f"stop it first"
            )
        connection.commit()
        return connection

    def close(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None
        self.engine.dispose()

    # ------------------------------------------------------------------------------------------- reviews

    def add_reviews(self, texts: Sequence[str], source: str) -> tuple[list[int], int]:
        """The ids of `texts` in the store, adding those not in it; and how many were added."""
        hashes = [text_hash(text) for text in texts]
        now = time.time()
        with self.engine.begin() as connection:
            known = self._ids(connection, hashes)
            new = {h: t for h, t in zip(hashes, texts) if h not in known}
            if new:
                connection.execute(
                    sa.insert(reviews_table),
                    [{"hash": h, "text": t, "source": source, "added_at": now} for h, t in new.items()],
                )
                known = self._ids(connection, hashes)
        return [known[h] for h in hashes], len(new)

    @staticmethod
    def _ids(connection, hashes: Sequence[str]) -> dict[str, int]:
        found = {}
        for start in range(0, len(hashes), 500):  # an IN list of bounded length
            part = hashes[start : start + 500]
            query = sa.select(reviews_table.c.hash, reviews_table.c.id).where(reviews_table.c.hash.in_(part))
            found.update(dict(connection.execute(query).all()))
        return found

    def import_file(self, path: str | Path, columns: Columns = Columns()) -> ImportReport:
        """Add a review file's reviews (CSV, TSV, JSONL, Parquet), with the labels of the rows that have one.
        A review already in the store is counted, not added again; its label from this file is added once."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"{path}: no such file")
        report = ImportReport(str(path))
        texts, raw_labels, lines = self._read_for_import(path, columns, report)
        labels = self._labels_for_import(path, raw_labels, lines, columns, report)
        ids, report.added = self.add_reviews(texts, source=f"{path.name}")
        report.present = len(set(ids)) - report.added
        given = [(i, label) for i, label in zip(ids, labels) if label is not None]
        report.labelled = self._import_labels(given, f"import {path.name}")
        return report

    def _read_for_import(self, path: Path, columns: Columns, report: ImportReport):
        texts, raw_labels, lines = [], [], []
        text_key = label_key = None
        for line, record in records(path):
            if text_key is None:
                keys = list(record)
                text_key = pick_column(keys, columns.text, TEXT_COLUMNS, "text", path)
                label_key = columns.label or next((k for k in keys if k.lower() in LABEL_COLUMNS), None)
            problem = text_problem(record.get(text_key))
            if problem is not None:
                report.refused.append((line, f"{problem} (column {text_key!r})"))
                continue
            raw = record.get(label_key) if label_key else None
            texts.append(record[text_key])
            raw_labels.append("" if raw is None or raw != raw else str(raw).strip())
            lines.append(line)
        if not texts:
            raise StoreError(f"{path}: no review to import" + (f" ({report.refused[0][1]})" if report.refused else ""))
        return texts, raw_labels, lines

    def _labels_for_import(self, path, raw_labels, lines, columns: Columns, report) -> list[str | None]:
        """Each row's class name (None: unlabelled); the store's classes named from the file when it has none."""
        if not any(raw_labels):
            return [None] * len(raw_labels)
        from critic.data.reading import resolve_labels

        known = self.labels
        file_labels, to_index = resolve_labels(
            raw_labels, Columns(label_map=columns.label_map, labels=known or columns.labels)
        )
        if not known:
            self.set_labels(file_labels)
        named = []
        for raw, line in zip(raw_labels, lines):
            index = to_index(raw) if raw else None
            if raw and index is None:
                report.refused.append((line, f"label {raw!r} is not one of {', '.join(file_labels)}"))
            named.append(file_labels[index] if index is not None else None)
        return named

    def _import_labels(self, given: list[tuple[int, str]], annotator: str) -> int:
        """Labels from a file, each (review, label) once however often the file is imported."""
        with self.engine.begin() as connection:
            taken = set(
                connection.execute(
                    sa.select(labels_table.c.review_id, labels_table.c.label).where(labels_table.c.origin == "import")
                ).all()
            )
            fresh = list(dict.fromkeys(pair for pair in given if pair not in taken))
            now = time.time()
            if fresh:
                connection.execute(
                    sa.insert(labels_table),
                    [
                        {"review_id": i, "label": label, "annotator": annotator, "origin": "import", "created_at": now}
                        for i, label in fresh
                    ],
                )
        return len(fresh)

    def review(self, review_id: int) -> dict | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(reviews_table).where(reviews_table.c.id == review_id)).mappings().first()
        return dict(row) if row else None

    def texts(self, ids: Sequence[int]) -> list[str]:
        with self.engine.connect() as connection:
            found = {}
            for start in range(0, len(ids), 500):
                part = list(ids[start : start + 500])
                query = sa.select(reviews_table.c.id, reviews_table.c.text).where(reviews_table.c.id.in_(part))
                found.update(dict(connection.execute(query).all()))
        return [found[i] for i in ids]

    def reviews(self) -> pd.DataFrame:
        """Every review: id, hash, text, source."""
        with self.engine.connect() as connection:
            query = sa.select(reviews_table.c.id, reviews_table.c.hash, reviews_table.c.text, reviews_table.c.source)
            return pd.DataFrame(
                connection.execute(query.order_by(reviews_table.c.id)).all(), columns=["id", "hash", "text", "source"]
            )

    # -------------------------------------------------------------------------------------------- labels

    def add_label(
        self, review_id: int, label: str, annotator: str, origin: str = "person", shown: dict | None = None
    ) -> int:
        """Record a label; returns its id once it is committed (and synced, with SQLite). `shown`: what the page
        showed (model, suggestion, confidence, picked_for)."""
        if label not in self.labels:
            raise StoreError(f"label {label!r} is not one of {', '.join(self.labels)}")
        if origin not in ORIGINS[:3]:
            raise StoreError(f"origin {origin!r}: one of {', '.join(ORIGINS[:3])}")
        if not annotator or not annotator.strip():
            raise StoreError("a label needs an annotator's name")
        shown = {k: v for k, v in (shown or {}).items() if k in ("model", "suggestion", "confidence", "picked_for")}
        with self.engine.begin() as connection:
            if not connection.execute(sa.select(reviews_table.c.id).where(reviews_table.c.id == review_id)).first():
                raise StoreError(f"no review {review_id} in {self.name}")
            row = dict(review_id=review_id, label=label, annotator=annotator.strip(), origin=origin, **shown)
            return connection.execute(
                sa.insert(labels_table).values(**row, created_at=time.time())
            ).inserted_primary_key[0]

    def undo(self, label_id: int, annotator: str) -> int:
        """Take back a label (a row that retracts it; the label stays in the history). Only its annotator may."""
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(labels_table).where(labels_table.c.id == label_id)).mappings().first()
            if row is None or row["origin"] == "undo":
                raise StoreError(f"no label {label_id} to undo")
            if row["annotator"] != annotator:
                raise StoreError(f"label {label_id} was given by {row['annotator']}, not {annotator}")
            if connection.execute(UNDONE.where(labels_table.c.retracts == label_id)).first():
                raise StoreError(f"label {label_id} is already undone")
            values = dict(review_id=row["review_id"], annotator=annotator, origin="undo", retracts=label_id)
            return connection.execute(
                sa.insert(labels_table).values(**values, created_at=time.time())
            ).inserted_primary_key[0]

    def history(self) -> pd.DataFrame:
        """Every label that stands (undone ones left out), oldest first."""
        with self.engine.connect() as connection:
            query = sa.select(labels_table).where(STANDING).order_by(labels_table.c.id)
            return pd.DataFrame(connection.execute(query).mappings().all(), columns=[c.name for c in labels_table.c])

    def label_count(self) -> int:
        """How many labels stand (undone ones left out): `len(history())`, counted by the database."""
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).where(STANDING)).scalar())

    def labelled(self, texts: bool = True) -> pd.DataFrame:
        """One row per labelled review: id, hash, text, label (its class's index), votes, and whether its
        annotators disagree. The label: the majority, then the latest (`label_of`). `texts=False`: without hash
        and text, read from the labels alone (what counting needs)."""
        index = {name: i for i, name in enumerate(self.labels)}
        rows = [
            {
                "id": int(review_id),
                "label": index[label_of(given)],
                "votes": len(given),
                "disagree": len(set(given)) > 1,
            }
            for review_id, given in self.history().groupby("review_id", sort=True)["label"]
        ]
        frame = pd.DataFrame(rows, columns=["id", "label", "votes", "disagree"])
        if not texts:
            return frame
        found = self._hashes_and_texts(frame["id"].tolist())
        frame.insert(1, "hash", [found[i][0] for i in frame["id"]])
        frame.insert(2, "text", [found[i][1] for i in frame["id"]])
        return frame

    def _hashes_and_texts(self, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
        found = {}
        with self.engine.connect() as connection:
            for start in range(0, len(ids), 500):
                part = list(ids[start : start + 500])
                query = sa.select(reviews_table.c.id, reviews_table.c.hash, reviews_table.c.text)
                found.update(
                    {
                        row.id: (row.hash, row.text)
                        for row in connection.execute(query.where(reviews_table.c.id.in_(part)))
                    }
                )
        return found

    def review_count(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(reviews_table)).scalar())

    def votes(self, ids: Sequence[int]) -> dict[int, int]:
        """How many standing labels each of these reviews has (absent: none)."""
        if not len(ids):
            return {}
        with self.engine.connect() as connection:
            query = (
                sa.select(labels_table.c.review_id, sa.func.count())
                .where(labels_table.c.review_id.in_(list(ids)), STANDING)
                .group_by(labels_table.c.review_id)
            )
            return {int(review_id): int(count) for review_id, count in connection.execute(query)}

    def unlabelled_ids(self, among: Iterable[int] | None = None) -> list[int]:
        """The reviews without a standing label, in id order; `among`: of these ids only (the labelling session's
        `next` asks about its plan's reviews on every request: 20 ids in 0.9 ms where all 4,000 of a pool take 10 ms,
        and a `next` 3.3 ms against 15.8 when it read them all; AMD EPYC Zen 3, 2026-12-07)."""
        with self.engine.connect() as connection:
            query = sa.select(reviews_table.c.id).where(reviews_table.c.id.not_in(LABELLED))
            if among is not None:
                query = query.where(reviews_table.c.id.in_([int(i) for i in among]))
            return list(connection.execute(query.order_by(reviews_table.c.id)).scalars().all())

    def counts(self) -> dict[str, int]:
        """Labelled reviews per class (as training reads them)."""
        counted = Counter(self.labelled(texts=False)["label"])
        return {name: counted.get(i, 0) for i, name in enumerate(self.labels)}

    # -------------------------------------------------------------------------------- the serving queue

    def enqueue(self, texts: Sequence[str], reasons: Sequence[str], model: str, suggestions, confidences) -> int:
        """Reviews a server answered, sent back for a person (unsure, or a random sample of the others)."""
        ids, _ = self.add_reviews(texts, source=f"serve {model}")
        now = time.time()
        with self.engine.begin() as connection:
            connection.execute(
                sa.insert(queue_table),
                [
                    dict(review_id=i, reason=r, model=model, suggestion=s, confidence=float(c), added_at=now)
                    for i, r, s, c in zip(ids, reasons, suggestions, confidences)
                ],
            )
        return len(ids)

    def queued(self) -> pd.DataFrame:
        """The queued reviews no one has labelled yet, oldest first, each once: review_id, reason, suggestion,
        confidence."""
        with self.engine.connect() as connection:
            query = sa.select(queue_table).where(queue_table.c.review_id.not_in(LABELLED)).order_by(queue_table.c.id)
            frame = pd.DataFrame(connection.execute(query).mappings().all(), columns=[c.name for c in queue_table.c])
        return frame.drop_duplicates("review_id").reset_index(drop=True)


def label_of(votes: Iterable[str]) -> str:
    """The training rule for a review several people labelled: the majority, and among equals the latest."""
    votes = list(votes)
    counted = Counter(votes)
    most = max(counted.values())
    return next(vote for vote in reversed(votes) if counted[vote] == most)


@contextmanager
def opened(where: str | Path, create: bool = False):
    store = Store(where, create=create)
    try:
        yield store
    finally:
        store.close()
