"""critic predict --engine ray on a real local Ray cluster (2 CPUs, started and stopped here): the same labels and
probabilities as critic predict, every row accounted for, finished files not scored again."""

import json
import shutil
import threading
import time

import numpy as np
import pandas as pd
import pytest
import synthetic

from critic.cli import main
from critic.inference.files import predict_file
from critic.inference.predict import Classifier

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
    return (
        pd.concat([pd.read_parquet(p) for p in sorted(folder.rglob("*.parquet"))], ignore_index=True)
        if folder.exists()
        else pd.DataFrame()
    )


def test_ray_scores_like_critic_predict_and_accounts_for_every_row(cluster, toy_model, reviews, tmp_path):
    from critic.inference.scale import predict_ray

    out = tmp_path / "out"
    summary = predict_ray(
        toy_model, [str(reviews)], out, workers=2, batch_size=64, backend="torch", log=lambda line: None
    )
    assert summary["rows"] == 498 and summary["rejected"] == 2
    scored, rejected = read_all(out / "scored"), read_all(out / "rejected")
    assert sorted(scored["id"]) == sorted(set(range(300)) - {4, 7} | set(range(1000, 1200)))  # none lost or doubled
    assert dict(zip(rejected["id"], rejected["rejected_reason"])) == {
        4: "empty text",
        7: "not UTF-8 text; re-save the file as UTF-8",
    }
    # the same labels and probabilities as critic predict --file on the same rows
    good = pd.read_parquet(reviews / "b.parquet")
    local = tmp_path / "local.parquet"
    predict_file(Classifier.load(toy_model, backend="torch"), reviews / "b.parquet", local, progress=False)
    expected = pd.read_parquet(local).set_index("id")
    got = scored.set_index("id").loc[good["id"]]
    assert (got["label"].to_numpy() == expected.loc[good["id"], "label"].to_numpy()).all()
    assert np.abs(got["p_positive"].to_numpy() - expected.loc[good["id"], "p_positive"].to_numpy()).max() < 1e-5
    assert list(got.columns[:2]) == ["text", "truth"] and {"p_negative", "p_positive"} <= set(got.columns)


def test_a_second_run_skips_finished_files_and_redoes_a_half_written_one(
    cluster, toy_model, reviews, tmp_path, monkeypatch
):
    from critic.inference.scale import predict_ray

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
    monkeypatch.chdir(reviews.parent)  # the same file named from another folder
    fifth = predict_ray(toy_model, ["in/a.csv"], out, workers=1, backend="torch", log=lambda line: None)
    assert fifth["skipped_files"] == 1 and fifth["rows"] == 0


def test_the_cli_engine(cluster, toy_model, reviews, tmp_path):
    out = tmp_path / "cli"
    assert (
        main(
            [
                "predict",
                str(toy_model),
                "--engine",
                "ray",
                "--file",
                str(reviews / "b.parquet"),
                "--output",
                str(out),
                "--workers",
                "1",
                "--backend",
                "torch",
            ]
        )
        == 0
    )
    written = read_all(out / "scored")
    assert len(written) == 200 and set(written["label"]) <= {"negative", "positive"}
    assert json.loads(next((out / "_done").glob("*.json")).read_text())["rows"] == 200


def scoring_actors() -> dict:
    """The processes of Ray Data's scoring actors that have finished their constructor (the model loaded), so that
    batches are being sent to them: the actor table in Ray's control store says so, without the dashboard."""
    import psutil
    from ray._private.state import actors

    return {
        actor_id: psutil.Process(actor["Pid"])
        for actor_id, actor in actors().items()
        if "MapWorker" in actor["ActorClassName"] and actor["State"] == "ALIVE"
    }


def test_a_worker_killed_mid_run_is_retried_and_no_row_is_lost_or_doubled(cluster, toy_model, tmp_path):
    from critic.inference.scale import predict_ray

    source = tmp_path / "many.parquet"
    rows = synthetic.reviews(20_000, seed=3)
    rows.insert(0, "id", range(len(rows)))
    rows.to_parquet(source)
    out, result = tmp_path / "out", {}
    run = threading.Thread(
        target=lambda: result.update(
            predict_ray(
                toy_model, [str(source)], out, workers=2, batch_size=100, backend="torch", log=lambda line: None
            )
        )
    )
    earlier = set(scoring_actors())  # an earlier test's actors, if Ray had not reaped them yet
    run.start()
    deadline = time.monotonic() + 120
    while not (started := scoring_actors().keys() - earlier) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started, "no scoring actor started"
    assert run.is_alive(), "the run ended before the kill: the test would prove nothing"
    victim = scoring_actors()[min(started)]
    victim.kill()  # SIGKILL: as the kernel's out-of-memory killer or a lost node would
    victim.wait(10)
    run.join(timeout=300)
    assert not run.is_alive() and result["rows"] == len(rows)
    scored = read_all(out / "scored")
    assert sorted(scored["id"]) == list(range(len(rows)))  # none lost, none doubled
    assert scored["label"].notna().all()


def test_csv_output_keeps_texts_with_commas_quotes_and_newlines(cluster, toy_model, tmp_path):
    source = tmp_path / "tricky.jsonl"
    texts = ['a great, "moving" film', "dull\nand long", "loved it 😀"]
    pd.DataFrame({"id": [1, 2, 3], "text": texts}).to_json(source, orient="records", lines=True)
    out = tmp_path / "csv"
    assert (
        main(
            [
                "predict",
                str(toy_model),
                "--engine",
                "ray",
                "--file",
                str(source),
                "--output",
                str(out),
                "--workers",
                "1",
                "--backend",
                "torch",
                "--output-format",
                "csv",
            ]
        )
        == 0
    )
    written = pd.concat([pd.read_csv(p) for p in (out / "scored").rglob("*.csv")]).sort_values("id")
    assert written["text"].tolist() == texts
    assert list(written.columns) == ["id", "text", "label", "p_negative", "p_positive"]
    assert np.allclose(written[["p_negative", "p_positive"]].sum(axis=1), 1)


def test_many_files_are_scored_by_one_pool_of_actors(cluster, toy_model, tmp_path, monkeypatch):
    from critic.inference import scale

    folder = tmp_path / "lake"
    folder.mkdir()
    rows = synthetic.reviews(240, seed=4)
    rows.insert(0, "id", range(len(rows)))
    for k in range(12):
        rows.iloc[k * 20 : (k + 1) * 20].to_parquet(folder / f"part-{k:02d}.parquet")
    (folder / "extra.jsonl").write_text('{"id": 999, "text": "a great film"}\n')
    monkeypatch.setattr(scale, "GROUP_FILES", 8)
    out = tmp_path / "out"
    # one actor a pool: each group's pool loads the model again, and two took 42-43 s here against 31-35 s (Zen 3)
    summary = scale.predict_ray(
        toy_model, [str(folder)], out, workers=1, batch_size=16, backend="torch", log=lambda line: None
    )
    # 13 files: the JSONL file alone (another format), the 12 Parquet files in groups of at most 8
    assert summary["groups"] == 3 and summary["rows"] == 241
    records = [json.loads(p.read_text()) for p in (out / "_done").glob("*.json")]
    assert sorted(len(r["files"]) for r in records) == [1, 4, 8]
    assert sorted(read_all(out / "scored")["id"]) == [*range(240), 999]


def test_files_are_grouped_by_format_count_and_size(tmp_path, monkeypatch):
    from critic.inference import scale

    monkeypatch.setattr(scale, "GROUP_FILES", 3)
    monkeypatch.setattr(scale, "GROUP_BYTES", 250)
    files = []
    for name, size in (
        ("a.csv", 100),
        ("b.csv", 100),
        ("c.csv", 100),
        ("d.parquet", 10),
        ("e.parquet", 10),
        ("f.parquet", 10),
        ("g.parquet", 10),
    ):
        (tmp_path / name).write_bytes(b"x" * size)
        files.append(str(tmp_path / name))
    groups = [[scale.Path(p).name for p in group] for group in scale._groups([*files, "s3://bucket/h.parquet"])]
    assert groups == [
        ["a.csv", "b.csv"],
        ["c.csv"],
        ["d.parquet", "e.parquet", "f.parquet"],
        ["g.parquet", "h.parquet"],
    ]


def test_a_folder_uri_is_listed_and_scored(cluster, toy_model, reviews, tmp_path):
    from critic.inference.scale import input_files, predict_ray

    uri = f"file://{reviews}"
    assert input_files([uri]) == [f"file://{reviews / 'a.csv'}", f"file://{reviews / 'b.parquet'}"]
    with pytest.raises(FileNotFoundError, match="nothing to score"):
        input_files([f"file://{tmp_path / 'empty'}"])
    summary = predict_ray(toy_model, [uri], tmp_path / "out", workers=1, backend="torch", log=lambda line: None)
    assert summary["rows"] == 498 and summary["rejected"] == 2


def test_ray_keeps_the_inputs_columns_neutralises_csv_formulas_and_touches_only_its_own_folders(
    cluster, toy_model, tmp_path
):
    from critic.inference.scale import predict_ray

    source = tmp_path / "mine.jsonl"
    pd.DataFrame(
        {"text": ["=HYPERLINK(1) a great fun film", "awful boring mess"], "label": ["mine", "mine"], "id": ["-3", "@x"]}
    ).to_json(source, orient="records", lines=True)
    out = tmp_path / "out"
    other = out / "scored" / "someone-elses-folder"
    other.mkdir(parents=True)
    (other / "keep.txt").write_text("not critic's")
    predict_ray(toy_model, [str(source)], out, workers=1, backend="torch", output_format="csv", log=lambda line: None)
    assert (other / "keep.txt").read_text() == "not critic's"
    written = pd.concat([pd.read_csv(p, dtype=str) for p in (out / "scored").rglob("*.csv")])
    written = written.sort_values("critic_label")
    assert list(written.columns) == ["text", "label", "id", "critic_label", "critic_p_negative", "critic_p_positive"]
    assert written["label"].tolist() == ["mine", "mine"]
    assert written["critic_label"].tolist() == ["negative", "positive"]
    assert written["text"].tolist() == ["awful boring mess", "'=HYPERLINK(1) a great fun film"]
    assert written["id"].tolist() == ["'@x", "-3"]
    linked = tmp_path / "linked"
    linked.symlink_to(out)
    with pytest.raises(ValueError, match="a link; name a plain folder"):
        predict_ray(toy_model, [str(source)], linked, workers=1, backend="torch", log=lambda line: None)


def test_a_rerun_scores_again_a_changed_file_or_another_model_and_never_reads_its_own_output(
    cluster, toy_model, tmp_path
):
    """Before: a finished file was known by its path alone, so a changed input or another model was skipped on a
    rerun; and an output folder inside the input folder was read as input the next time."""
    from critic.inference.scale import predict_ray

    inputs = tmp_path / "in"
    inputs.mkdir()
    pd.DataFrame({"text": ["a great fun film", "awful boring mess"]}).to_csv(inputs / "a.csv", index=False)
    out = inputs / "out"  # inside the input folder

    def run(model=toy_model, lines=None):
        say = lines.append if lines is not None else lambda line: None
        return predict_ray(model, [str(inputs)], out, workers=1, backend="torch", log=say)

    assert run()["rows"] == 2
    assert run()["skipped_files"] == 1  # its own output was not taken for input
    pd.DataFrame({"text": ["dull", "superb", "the best film"]}).to_csv(inputs / "a.csv", index=False)
    lines = []
    again = run(lines=lines)
    assert again["rows"] == 3 and again["skipped_files"] == 0
    assert any("left out of the input" in line for line in lines)
    assert any("scored again; the earlier output is in" in line for line in lines)
    assert len(read_all(out / "scored")) == 3 and len(read_all(out / "_superseded" / "scored")) == 2
    other = tmp_path / "other-model"
    shutil.copytree(toy_model, other, ignore=shutil.ignore_patterns("checkpoint"))
    assert run(model=other)["rows"] == 3  # another model: scored again
