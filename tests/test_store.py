"""The labels store: reviews kept once, labels never overwritten, one writer, schema versions; SQLite here and a
real PostgreSQL server where its binaries are installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from critic import data
from critic.data import store as labels_store
from critic.data.store import SCHEMA_VERSION, Store, StoreError, StoreHeld, label_of


def partly_labelled(path: Path) -> Path:
    frame = pd.DataFrame(
        {
            "review": ["a great film", "an awful mess", "dull plot", "", "loved it", "fine, I guess", "so so"],
            "sentiment": ["positive", "negative", "", "positive", "pos", "", "maybe"],
        }
    )
    frame.to_csv(path, index=False)
    return path


def test_an_import_keeps_each_review_once_takes_its_labels_once_and_names_the_rows_it_skips(tmp_path):
    source = partly_labelled(tmp_path / "reviews.csv")
    store = Store(tmp_path / "labels.db", create=True)
    report = store.import_file(source)
    assert (report.added, report.present, report.labelled) == (6, 0, 3)
    assert store.labels == ("negative", "positive")
    assert [line for line, _ in report.refused] == [5, 8]  # the empty text, and a label outside the set
    assert "empty text" in report.refused[0][1] and "'maybe' is not one of negative, positive" in report.refused[1][1]
    again = store.import_file(source)
    assert (again.added, again.present, again.labelled) == (0, 6, 0)  # counted, not duplicated
    assert len(store.reviews()) == 6 and len(store.history()) == 3
    assert store.counts() == {"negative": 1, "positive": 2}


def test_two_opinions_are_both_kept_and_training_takes_the_majority_then_the_latest(tmp_path):
    store = Store(tmp_path / "labels.db", create=True, labels=["negative", "positive"])
    (review,), added = store.add_reviews(["a film of two minds"], source="test")
    assert added == 1
    store.add_label(review, "positive", "ann")
    second = store.add_label(review, "negative", "bob")
    labelled = store.labelled()
    assert labelled.loc[0, "disagree"] and labelled.loc[0, "votes"] == 2
    assert labelled.loc[0, "label"] == 0  # one each: the latest
    store.add_label(review, "positive", "cy")
    assert store.labelled().loc[0, "label"] == 1  # the majority
    with pytest.raises(StoreError, match="given by bob, not ann"):
        store.undo(second, "ann")
    store.undo(second, "bob")
    assert list(store.history()["annotator"]) == ["ann", "cy"]  # undone, yet kept in the table
    assert store.label_count() == len(store.history()) == 2
    with store.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(labels_store.labels_table)).scalar() == 4
    with pytest.raises(StoreError, match="not one of negative, positive"):
        store.add_label(review, "neutral", "ann")
    (other, undone), _ = store.add_reviews(["not labelled", "labelled, then undone"], source="test")
    store.undo(store.add_label(undone, "negative", "ann"), "ann")
    assert store.unlabelled_ids(among=[review, undone, other]) == store.unlabelled_ids() == [other, undone]
    assert store.unlabelled_ids(among=[review]) == [] and store.unlabelled_ids(among=[]) == []
    assert label_of(["a", "b", "b", "a"]) == "a" and label_of(["a", "b", "b"]) == "b"


def test_a_newer_store_is_refused_and_an_older_one_upgraded(tmp_path):
    newer = Store(tmp_path / "newer.db", create=True)
    with newer.engine.begin() as connection:
        Store._set(connection, "schema_version", SCHEMA_VERSION + 1)
    newer.close()
    with pytest.raises(StoreError, match=f"schema {SCHEMA_VERSION + 1}, written by a newer critic"):
        Store(tmp_path / "newer.db")

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'older.db'}")  # a version-1 store: no queue yet
    with engine.begin() as connection:
        for table in labels_store.TABLES_OF_VERSION[1]:
            table.create(connection)
        Store._set(connection, "schema_version", 1)
        Store._set(connection, "labels", ["negative", "positive"])
    engine.dispose()
    older = Store(tmp_path / "older.db")
    assert older.schema_version == SCHEMA_VERSION
    older.enqueue(["not sure about this one"], ["unsure"], "toy", ["positive"], [0.55])
    assert list(older.queued()["reason"]) == ["unsure"]


def test_a_file_that_is_not_a_store_nor_a_store_that_is_absent_is_opened(tmp_path):
    with pytest.raises(StoreError, match="no such labels store"):
        Store(tmp_path / "absent.db")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE films (title TEXT)"))
    engine.dispose()
    for create in (False, True):  # never written into, even when asked to make a store
        with pytest.raises(StoreError, match="not a critic labels store"):
            Store(tmp_path / "other.db", create=create)
    with pytest.raises(StoreError, match="no folder"):
        Store(tmp_path / "absent" / "labels.db", create=True)


HOLD = (  # a process that holds the store until its standard input closes
    "import sys; from critic.data.store import Store; store = Store(sys.argv[1]); store.hold('critic label'); "
    "print('held', flush=True); sys.stdin.read()"
)


def test_a_second_labelling_server_is_refused_naming_the_process_that_holds_the_store(tmp_path):
    Store(tmp_path / "labels.db", create=True).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "labels.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreHeld, match=f"process {holder.pid} on .*critic label"):
            Store(tmp_path / "labels.db").hold()
    finally:
        holder.kill()  # however it ends, the hold goes with it
        holder.wait()
    Store(tmp_path / "labels.db").hold()


def test_training_reads_a_store_and_a_review_never_changes_split_as_labels_arrive(tmp_path):
    import synthetic

    reviews = synthetic.reviews(400, seed=3)
    store = Store(tmp_path / "labels.db", create=True, labels=["negative", "positive"])
    ids, _ = store.add_reviews(list(reviews["text"]), source="synthetic")
    for review, label in list(zip(ids, reviews["label"]))[:200]:
        store.add_label(review, ["negative", "positive"][label], "ann")
    first = data.load(tmp_path / "labels.db")
    assert first.labels == ("negative", "positive") and len(first.frame) == 200
    assert set(first.frame["split"]) == {"train", "validation"}  # labels are dear: no test split held out
    for review, label in list(zip(ids, reviews["label"]))[200:]:
        store.add_label(review, ["negative", "positive"][label], "bob")
    second = data.load(str(tmp_path / "labels.db"))
    before = dict(zip(first.frame["text"], first.frame["split"]))
    assert all(before[t] == s for t, s in zip(second.frame["text"], second.frame["split"]) if t in before)
    assert 0.8 < (second.frame["split"] == "train").mean() < 0.97
    with pytest.raises(data.DataError, match="a labels store holds no test split"):
        second.split("test")


def test_a_few_labels_always_leave_a_validation_split(tmp_path):
    import synthetic

    store = Store(tmp_path / "labels.db", create=True, labels=["negative", "positive"])
    reviews = synthetic.reviews(40, seed=5)
    ids, _ = store.add_reviews(list(reviews["text"]), source="synthetic")
    counts = []
    for size in (6, 12, 20, 30, 40):
        for review, label in list(zip(ids, reviews["label"]))[len(store.history()) : size]:
            store.add_label(review, ["negative", "positive"][label], "ann")
        counts.append(int((data.load(tmp_path / "labels.db").frame["split"] == "validation").sum()))
    assert all(count >= least for count, least in zip(counts, (1, 1, 2, 3, 3)))  # a tenth, then at least 3


def test_a_store_of_one_class_is_refused_with_what_to_do(tmp_path):
    store = Store(tmp_path / "labels.db", create=True, labels=["negative", "positive"])
    ids, _ = store.add_reviews(["good", "fine"], source="test")
    for review in ids:
        store.add_label(review, "positive", "ann")
    with pytest.raises(data.DataError, match="at least two classes"):
        data.load(tmp_path / "labels.db")


# ---------------------------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def postgresql():
    """A PostgreSQL server of its own, started from Debian's binaries (`.ci/run` installs the `postgresql`
    package); yields its SQLAlchemy URL."""
    from ports import free_port

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")) if Path("/usr/lib/postgresql").is_dir() else []
    initdb = shutil.which("initdb") or (str(found[-1]) if found else None)
    if initdb is None:
        pytest.skip("PostgreSQL's binaries (Debian's postgresql package) are not installed; .ci/run installs them")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is not installed (the test extra has it)")
    bin_dir = Path(initdb).resolve().parent
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="critic-postgresql-"))  # outside pytest's folders, which only root may enter
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses to run as root
    if as_user:
        shutil.chown(folder, "postgres")
    port = free_port()
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", "critic", "-A", "trust"],
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [
            *as_user,
            str(bin_dir / "postgres"),
            "-D",
            str(folder / "data"),
            "-p",
            str(port),
            "-k",
            str(folder),
            "-h",
            "127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"postgresql+psycopg://critic@127.0.0.1:{port}/postgres"
    engine = sa.create_engine(url)
    deadline = time.monotonic() + 30
    while True:
        try:
            with engine.connect():
                break
        except sa.exc.OperationalError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("PostgreSQL did not start")
            time.sleep(0.2)
    engine.dispose()
    yield url
    server.terminate()
    server.wait(timeout=30)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_the_same_store_on_a_real_postgresql_server(postgresql, tmp_path):
    source = partly_labelled(tmp_path / "reviews.csv")
    store = Store(postgresql, create=True)
    report = store.import_file(source)
    assert (report.added, report.labelled) == (6, 3) and store.schema_version == SCHEMA_VERSION
    review = int(store.reviews()["id"].iloc[2])
    store.add_label(review, "negative", "ann")
    store.add_label(review, "positive", "bob")
    assert int(store.labelled()["disagree"].sum()) == 1
    store.enqueue(["served and unsure"], ["unsure"], "toy", ["positive"], [0.51])
    assert len(store.queued()) == 1
    assert store.unlabelled_ids(among=[review, *store.queued()["review_id"]]) == list(store.queued()["review_id"])
    store.hold("critic label")
    holder = subprocess.run([sys.executable, "-c", HOLD, postgresql], input="", capture_output=True, text=True)
    assert holder.returncode != 0 and f"held by process {os.getpid()}" in holder.stderr
    frame = data.load(postgresql).frame
    assert len(frame) == 4 and set(frame["label"]) == {0, 1}
    store.close()
