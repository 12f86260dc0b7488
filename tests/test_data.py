import tarfile

import pandas as pd
import pytest

from critic import data
from critic.data import Columns, DataError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_multiline_field_reports_physical_line(tmp_path):
    path = write(tmp_path / "r.csv", 'review,sentiment\n"one\ntwo\nthree",positive\n"",negative\n')
    with pytest.raises(DataError) as error:
        data.read_table(path)
    assert f"{path}, line 5: empty text (column 'review')" in str(error.value)


def test_unknown_label_names_file_line_and_value(tmp_path):
    path = write(tmp_path / "r.csv", "text,label\ngood,positive\nfine,meh\n")
    with pytest.raises(DataError) as error:
        data.read_table(path)
    message = str(error.value)
    assert f"{path}, line 3: unknown label 'meh' in column 'label'" in message
    assert "--drop-invalid" in message and "--label-map" in message


def test_drop_invalid_counts_and_records(tmp_path, capsys):
    path = write(tmp_path / "r.csv", "text,label\ngood,1\n,0\nbad,0\nx,7\n")
    frame, report = data.read_table(path, drop_invalid=True)
    assert frame.to_dict("list") == {"text": ["good", "bad"], "label": [1, 0]}
    assert report.as_dict()["rows_dropped"] == 2 and report.rows_read == 4
    assert "dropped 2 invalid row(s)" in capsys.readouterr().err


@pytest.mark.parametrize("raw", [("positive", "negative"), ("pos", "neg"), ("1", "0"), ("POSITIVE", "Negative")])
def test_known_label_spellings(tmp_path, raw):
    path = write(tmp_path / "r.csv", f"text,label\na,{raw[0]}\nb,{raw[1]}\n")
    assert data.read_table(path)[0]["label"].tolist() == [1, 0]


def test_explicit_label_map_and_columns(tmp_path):
    path = write(tmp_path / "r.tsv", "id\tbody\tstars\n1\tlovely\tgood\n2\tdreadful\tbad\n")
    columns = Columns(text="body", label="stars", label_map=data.parse_label_map("good=positive,bad=negative"))
    frame, _ = data.read_table(path, columns)
    assert frame.to_dict("list") == {"text": ["lovely", "dreadful"], "label": [1, 0]}


def test_row_with_more_values_than_the_header(tmp_path):
    path = write(tmp_path / "r.csv", "text,label\ngood film,1,extra\nbad film,0\n")
    assert data.read_table(path)[0].to_dict("list") == {"text": ["good film", "bad film"], "label": [1, 0]}


def test_label_map_must_cover_both_classes():
    with pytest.raises(DataError, match="at least one value to each"):
        data.parse_label_map("good=positive,great=positive")
    with pytest.raises(DataError, match="at least one value to each"):  # any class names, but two of them
        data.parse_label_map("good=yes")


def test_missing_column_lists_columns(tmp_path):
    path = write(tmp_path / "r.csv", "a,b\nx,y\n")
    with pytest.raises(DataError, match=r"cannot tell which column holds the text; columns are a, b"):
        data.read_table(path)
    with pytest.raises(DataError, match=r"no text column 'body'; the columns are: a, b"):
        data.read_table(path, Columns(text="body"))


def test_jsonl_bad_line_and_parquet(tmp_path):
    good = tmp_path / "r.jsonl"
    good.write_text('{"text": "nice", "label": "pos"}\n\n{"text": "poor", "label": "neg"}\n')
    assert data.read_table(good)[0]["label"].tolist() == [1, 0]
    bad = write(tmp_path / "b.jsonl", '{"text": "nice", "label": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"b.jsonl, line 2: not valid JSON"):
        data.read_table(bad)
    parquet = tmp_path / "r.parquet"
    pd.DataFrame({"review": ["a", None], "sentiment": [1, 0]}).to_parquet(parquet)
    with pytest.raises(DataError, match=r"r.parquet, line 2: empty or missing text \(column 'review'\)"):
        data.read_table(parquet)


def test_non_utf8_file_is_a_clear_error(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.csv, line 2: not UTF-8 text"):
        data.read_table(path)


def test_unknown_format(tmp_path):
    with pytest.raises(DataError, match=r"unknown format '.xlsx'"):
        data.read_table(write(tmp_path / "r.xlsx", "x"))


def _aclimdb(root):
    reviews = {
        ("train", "pos"): ["great fun"],
        ("train", "neg"): ["dull mess"],
        ("test", "pos"): ["superb"],
        ("test", "neg"): ["awful"],
    }
    for (split, label), texts in reviews.items():
        folder = root / "aclImdb" / split / label
        folder.mkdir(parents=True)
        for i, text in enumerate(texts):
            (folder / f"{i}_7.txt").write_text(text)
    return root / "aclImdb"


def test_aclimdb_folder_and_tarball_agree(tmp_path):
    folder = _aclimdb(tmp_path)
    tarball = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(folder, arcname="aclImdb")
    from_folder, _ = data.read_table(folder)
    from_tar, _ = data.read_table(tarball)
    key = ["text", "label", "official_split"]
    assert from_folder.sort_values("text")[key].values.tolist() == from_tar.sort_values("text")[key].values.tolist()
    assert set(from_tar["official_split"]) == {"train", "test"}


def test_official_split_offered_for_aclimdb(tmp_path):
    dataset = data.load(_aclimdb(tmp_path))
    assert sorted(dataset.split("official-test")["text"]) == ["awful", "superb"]


def test_dedupe_drops_conflicting_labels():
    frame = pd.DataFrame({"text": ["a", "a", "b", "b", "c"], "label": [1, 1, 0, 1, 0]})
    report = data.Report("x")
    kept = data.dedupe(frame, report)
    assert kept["text"].tolist() == ["a", "c"] and report.duplicates_removed == 3


def test_splits_are_deterministic_order_independent_and_disjoint(tmp_path):
    texts = [f"review number {i} about film {i % 7}" for i in range(3000)]
    frame = pd.DataFrame(
        {"text": texts + texts[:50], "label": [i % 2 for i in range(3000)] + [i % 2 for i in range(50)]}
    )
    a = data.load(write_csv(tmp_path / "a.csv", frame))
    b = data.load(write_csv(tmp_path / "b.csv", frame.sample(frac=1, random_state=3)))
    assert a.manifest["splits"] == b.manifest["splits"]
    assert a.manifest["duplicates_removed"] == 50
    sets = {s: set(a.split(s)["text"]) for s in data.SPLITS}
    assert not (sets["train"] & sets["validation"]) and not (sets["train"] & sets["test"])
    assert not (sets["validation"] & sets["test"])
    assert 0.76 < len(sets["train"]) / 3000 < 0.84


def write_csv(path, frame):
    frame.to_csv(path, index=False)
    return path


def test_seeded_subset(tmp_path):
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(500)], "label": [i % 2 for i in range(500)]})
    dataset = data.load(write_csv(tmp_path / "d.csv", frame))
    first = dataset.split("train", size=50, seed=1)["text"].tolist()
    assert first == dataset.split("train", size=50, seed=1)["text"].tolist()
    assert first != dataset.split("train", size=50, seed=2)["text"].tolist()
    assert len(first) == 50
    with pytest.raises(DataError, match="no review in the split 'dev'; available: test, train, validation, all"):
        dataset.split("dev")


def test_a_missing_validation_split_says_why_and_what_to_do(tmp_path):
    """A few-label file with its own split column but no validation rows, and one so small that the hash split left
    validation empty: each error names the file and how to mend it (it said "no split 'validation'")."""
    frame = pd.DataFrame({"text": [f"review {i}" for i in range(12)], "label": ["good", "bad"] * 6})
    own = write_csv(tmp_path / "own.csv", frame.assign(split=["train"] * 8 + ["test"] * 4))
    with pytest.raises(
        DataError,
        match=r"own.csv: no review in the split 'validation': the file's split column names "
        r"only test, train; mark some labelled rows 'validation'",
    ):
        data.load(own).split("validation")
    two = write_csv(tmp_path / "two.csv", frame.head(2))
    hashed = data.load(two)
    assert set(hashed.frame["split"]) == {"train"}  # 2 reviews, both hashed into train
    with pytest.raises(DataError, match="two.csv: no review in the split 'test': its 2 reviews were split 80/10/10"):
        hashed.split("test")


def test_clean_default():
    assert data.clean_default("Great&amp;fun.<br /><br />Loved it &quot;a lot&quot;") == 'Great&fun. Loved it "a lot"'
    assert data.clean_default("Amélie  was\nfine<BR>ok") == "Amélie was fine ok"


def test_clean_notebook_rules():
    raw = 'The Film\'s "BEST" *scene*\\ at http://x.y/z — café<br />end'
    assert data.clean_notebook(raw) == "the films best scene at caf end"


def test_clean_none_and_unknown():
    assert data.clean_none(" <br /> x ") == " <br /> x "
    with pytest.raises(DataError, match="unknown cleaning recipe 'fancy'"):
        data.cleaner("fancy")


def test_load_dataset_api(tmp_path):
    frame = pd.DataFrame({"review": [f"text {i}" for i in range(100)], "sentiment": ["positive", "negative"] * 50})
    train = data.load_dataset(write_csv(tmp_path / "d.csv", frame), split="train")
    assert list(train.columns) == ["text", "label"] and set(train["label"]) <= {0, 1}


@pytest.mark.integration
def test_real_imdb_splits(real_cache):
    dataset = data.load("imdb")
    splits = dataset.manifest["splits"]
    assert dataset.manifest["rows_read"] == 50_000 and dataset.manifest["duplicates_removed"] == 418
    assert sum(s["rows"] for s in splits.values()) == 49_582
    assert {k: v["rows"] for k, v in splits.items()} == {"test": 4986, "train": 39717, "validation": 4879}


def test_a_files_own_split_column_is_kept_and_a_bad_value_named(tmp_path):
    path = write(tmp_path / "r.csv", "text,label,split\ngood,1,train\nbad,0,Train\nfine,1,test\nmeh,0,validation\n")
    dataset = data.load(path)
    assert dataset.split("test")["text"].tolist() == ["fine"] and len(dataset.split("train")) == 2
    assert dataset.manifest["splits"]["validation"]["rows"] == 1
    write(path, "text,label,split\ngood,1,train\nbad,0,dev\n")
    with pytest.raises(DataError, match=f"{path}, line 3: split 'dev' is not one of train, validation, test"):
        data.load(path)


def test_an_aclimdb_link_out_of_the_folder_is_not_read(tmp_path):
    """Before: a link under aclImdb/ to a file elsewhere was read as a review."""
    folder = _aclimdb(tmp_path / "set")
    secret = tmp_path / "secret.txt"
    secret.write_text("not a review: a secret")
    (folder / "train" / "pos" / "9_9.txt").symlink_to(secret)
    (folder / "train" / "pos" / "8_9.txt").symlink_to(folder / "test" / "pos" / "0_7.txt")  # inside: read
    texts = data.read_table(folder)[0]["text"].tolist()
    assert "not a review: a secret" not in texts and texts.count("superb") == 2
