"""critic predict --engine ray on a real local Ray cluster (2 CPUs, started and stopped here): the same labels and
probabilities as critic predict, every row accounted for, finished files not scored again."""

import json

import numpy as np
import pandas as pd
import pytest

import synthetic
from critic.cli import main
from critic.files import predict_file
from critic.predict import Classifier

ray = pytest.importorskip("ray", reason="Ray is the optional extra critic[ray]; the set-up installs it")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def reviews(tmp_path):
    """Two input files: a CSV with an empty text and bad bytes among its rows, and a Parquet file."""
    folder = tmp_path / "in"
    folder.mkdir()
    first = synthetic.reviews(300, seed=1).rename(columns={"label": "truth"})
    first.insert(0, "id", range(300))
    body = first.to_csv(index=False).encode()
    lines = body.split(b"\n")
    lines[5] = b"4,,0"  # row 4: an empty text
    lines[8] = b"7,the film \xff\xfe was great,1"  # row 7: bytes that are not UTF-8
    (folder / "a.csv").write_bytes(b"\n".join(lines))
    second = synthetic.reviews(200, seed=2).rename(columns={"label": "truth"})
    second.insert(0, "id", range(1000, 1200))
    second.to_parquet(folder / "b.parquet")
    return folder


def read_all(folder):
    return pd.concat([pd.read_parquet(p) for p in sorted(folder.rglob("*.parquet"))], ignore_index=True) \
        if folder.exists() else pd.DataFrame()


def test_ray_scores_like_critic_predict_and_accounts_for_every_row(cluster, toy_model, reviews, tmp_path):
    from critic.scale import predict_ray

    out = tmp_path / "out"
    summary = predict_ray(toy_model, [str(reviews)], out, workers=2, batch_size=64, backend="torch",
                          log=lambda line: None)
    assert summary["rows"] == 498 and summary["rejected"] == 2
    scored, rejected = read_all(out / "scored"), read_all(out / "rejected")
    assert sorted(scored["id"]) == sorted(set(range(300)) - {4, 7} | set(range(1000, 1200)))  # none lost or doubled
    assert dict(zip(rejected["id"], rejected["rejected_reason"])) == {
        4: "empty text", 7: "not UTF-8 text; re-save the file as UTF-8"}
    # the same labels and probabilities as critic predict --file on the same rows
    good = pd.read_parquet(reviews / "b.parquet")
    local = tmp_path / "local.parquet"
    predict_file(Classifier.load(toy_model, backend="torch"), reviews / "b.parquet", local, progress=False)
    expected = pd.read_parquet(local).set_index("id")
    got = scored.set_index("id").loc[good["id"]]
    assert (got["label"].to_numpy() == expected.loc[good["id"], "label"].to_numpy()).all()
    assert np.abs(got["p_positive"].to_numpy() - expected.loc[good["id"], "p_positive"].to_numpy()).max() < 1e-5
    assert list(got.columns[:2]) == ["text", "truth"] and {"p_negative", "p_positive"} <= set(got.columns)


def test_a_second_run_skips_finished_files_and_redoes_a_half_written_one(cluster, toy_model, reviews, tmp_path):
    from critic.scale import predict_ray

    out = tmp_path / "out"
    predict_ray(toy_model, [str(reviews / "*.parquet")], out, workers=1, backend="torch", log=lambda line: None)
    (reviews / "b.parquet").unlink()  # a finished file is never read again
    lines = []
    again = predict_ray(toy_model, [str(reviews / "a.csv")], out, workers=1, backend="torch", log=lines.append)
    assert again["rows"] == 298 and again["skipped_files"] == 0
    # as if the run had been killed while writing a.csv's output: no record, a stray part
    done = sorted((out / "_done").glob("a-*.json"))
    assert len(done) == 1
    done[0].unlink()
    stray = next((out / "scored").glob("a-*")) / "stray.parquet"
    pd.DataFrame({"id": [-1]}).to_parquet(stray)
    third = predict_ray(toy_model, [str(reviews / "a.csv")], out, workers=1, backend="torch", log=lambda line: None)
    assert third["rows"] == 298 and not stray.exists()
    assert len(read_all(out / "scored")) == 298 + 200  # nothing doubled
    fourth = predict_ray(toy_model, [str(reviews / "a.csv")], out, workers=1, backend="torch", log=lines.append)
    assert fourth["skipped_files"] == 1 and any("scored in an earlier run" in line for line in lines)


def test_the_cli_engine(cluster, toy_model, reviews, tmp_path):
    out = tmp_path / "cli"
    assert main(["predict", str(toy_model), "--engine", "ray", "--file", str(reviews / "b.parquet"), "--output",
                 str(out), "--workers", "1", "--backend", "torch"]) == 0
    written = read_all(out / "scored")
    assert len(written) == 200 and set(written["label"]) <= {"negative", "positive"}
    assert json.loads(next((out / "_done").glob("*.json")).read_text())["rows"] == 200
