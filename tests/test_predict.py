import json

import numpy as np
import pandas as pd
import pytest
import synthetic

import critic
from critic import modeling
from critic.cli import main
from critic.inference.files import predict_file
from critic.inference.predict import Classifier


def test_predict_and_proba(toy_model):
    clf = Classifier.load(toy_model)
    assert clf.labels == ["negative", "positive"]
    probs = clf.predict_proba(["a great fun film", "awful boring mess", "the plot was superb and brilliant"])
    assert probs.shape == (3, 2) and np.allclose(probs.sum(axis=1), 1)
    assert clf.predict(["a great fun film", "awful boring mess"]) == ["positive", "negative"]


def test_batched_equals_one_by_one(toy_model):
    clf = Classifier.load(toy_model, precision="fp32")
    texts = synthetic.reviews(40, seed=5, max_words=60)["text"].tolist()
    together = clf.predict_proba(texts)
    alone = np.vstack([clf.predict_proba([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    in_chunks = clf.predict_proba(texts, chunk=7)  # tokenized 7 at a time, the next chunk while one is scored
    assert np.allclose(together, in_chunks, atol=1e-5)


def test_bad_input_names_the_row(toy_model):
    clf = Classifier.load(toy_model)
    with pytest.raises(ValueError, match="text 1: empty text"):
        clf.predict(["fine film", "   "])
    with pytest.raises(ValueError, match="text 0: expected a string, got int"):
        clf.predict([3])


def test_same_probabilities_through_transformers_pipeline(toy_model):
    from transformers import pipeline

    clf = Classifier.load(toy_model, precision="fp32")
    texts = ["a great fun film", "awful boring mess and the worst plot", "the acting was good"]
    ours = clf.predict_proba(texts)
    theirs = pipeline("text-classification", model=str(toy_model), top_k=None, device="cpu")(texts)
    for row, scores in zip(ours, theirs):
        by_label = {s["label"]: s["score"] for s in scores}
        assert np.allclose(row, [by_label["negative"], by_label["positive"]], atol=1e-5)


def test_the_pipeline_reads_raw_reviews_as_critic_does(toy_model, tiny_bert):
    """The model folder's tokenizer carries the default cleaning: <br /> tags and HTML entities in raw reviews give
    the pipeline the same probabilities as critic, which cleans before tokenizing."""
    from transformers import pipeline

    clf = Classifier.load(toy_model, precision="fp32")
    texts = [
        "a great fun film<br /><br />the acting was superb &amp; brilliant",
        "awful boring mess.<BR>the worst &quot;plot&quot; ever",
        "&lt;br /&gt; dull   and  \n boring",
    ]
    ours = clf.predict_proba(texts)
    theirs = pipeline("text-classification", model=str(toy_model), top_k=None, device="cpu")(texts)
    got = np.array(
        [[{s["label"]: s["score"] for s in scores}[k] for k in ("negative", "positive")] for scores in theirs]
    )
    assert np.allclose(ours, got, atol=1e-5)
    from transformers import AutoTokenizer

    from critic.data import clean_default

    saved, plain = AutoTokenizer.from_pretrained(toy_model), AutoTokenizer.from_pretrained(tiny_bert)
    for text in texts:
        assert saved.tokenize(text) == saved.tokenize(clean_default(text))
        assert plain.tokenize(text) != plain.tokenize(clean_default(text))  # without the rules, markup is read


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".txt"])
def test_predict_file_formats(toy_model, tmp_path, suffix):
    texts = ["a great fun film", "awful boring mess", "the plot was superb"]
    source = tmp_path / f"in{suffix}"
    if suffix == ".csv":
        pd.DataFrame({"id": [1, 2, 3], "review": texts}).to_csv(source, index=False)
    elif suffix == ".jsonl":
        source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    elif suffix == ".parquet":
        pd.DataFrame({"text": texts}).to_parquet(source)
    else:
        source.write_text("\n".join(texts) + "\n")
    target = tmp_path / f"out{'.csv' if suffix == '.txt' else suffix}"
    assert predict_file(Classifier.load(toy_model), source, target, chunk=2, progress=False) == 3
    scored = {".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True), ".parquet": pd.read_parquet}[
        target.suffix
    ](target)
    assert scored["label"].tolist() == ["positive", "negative", "positive"]
    assert np.allclose(scored["p_negative"] + scored["p_positive"], 1, atol=1e-5)


def test_predict_file_empty_row_is_named(toy_model, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "good"}\n{"text": ""}\n')
    with pytest.raises(ValueError, match=r"in.jsonl, line 2: empty text \(column 'text'\)"):
        predict_file(Classifier.load(toy_model), source, tmp_path / "out.jsonl", progress=False)


def test_evaluate_model_and_cli(own_toy_model, tmp_path, capsys):
    toy_model = own_toy_model  # the evaluation writes into the model's card and critic.json
    data = toy_model.parent / "toy.csv"
    summary = critic.evaluate_model(toy_model, data, "test")
    assert summary["accuracy"] > 0.9
    base = summary["baseline"]  # TF-IDF + logistic regression on the model's own 800 training rows
    assert base["train_rows"] == json.loads((toy_model / "critic.json").read_text())["train_rows"]
    assert base["accuracy"] > 0.9 and base["accuracy_ci95"][0] <= base["accuracy"] <= base["accuracy_ci95"][1]
    card = (toy_model / "README.md").read_text()
    assert "## Evaluation" in card and f"{summary['accuracy']:.4f}" in card and "Baseline on the same reviews" in card
    assert "Calibrated: temperature" in card
    html = (toy_model / "evaluation" / "evaluation.html").read_text()
    assert "Against a baseline" in html and "TF-IDF" in html
    unsure = {t["target"]: t for t in summary["unsure"]["targets"]}  # thresholds from the validation split
    assert unsure[0.9]["coverage"] > 0.9 and unsure[0.9]["met"] and unsure[0.99]["coverage"] == 0.0
    assert "Not sure: answering only above a confidence" in html and "Accuracy against coverage" in html
    from huggingface_hub import ModelCard

    results = {r.metric_type: r.metric_value for r in ModelCard.load(toy_model / "README.md").data.eval_results}
    assert results["accuracy"] == pytest.approx(summary["accuracy"]) and "roc_auc" in results  # the model-index
    assert main(["predict", str(toy_model), "a great fun film"]) == 0
    assert capsys.readouterr().out.startswith("positive\t")
    assert main(["evaluate", str(toy_model), str(data), "--output", str(tmp_path / "ev"), "--no-baseline"]) == 0
    assert "baseline" not in json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert main(["predict", str(tmp_path / "nothing"), "x"]) == 2
    assert f"model folder {tmp_path / 'nothing'} does not exist" in capsys.readouterr().err


def test_evaluate_defaults_to_the_models_own_data_and_asks_for_it_when_gone(own_toy_model, tmp_path, capsys):
    data = own_toy_model.parent / "toy.csv"
    modeling.update_record(own_toy_model, data=str(data), data_path=str(data))
    assert main(["evaluate", str(own_toy_model), "--no-baseline", "--output", str(tmp_path / "ev")]) == 0
    evaluation = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert evaluation["data"] == f"{data}, split test" and evaluation["accuracy"] > 0.9
    moved = data.rename(tmp_path / "elsewhere.csv")
    assert main(["evaluate", str(own_toy_model), "--no-baseline"]) == 2
    assert f"trained on {data}, which is not there any more" in capsys.readouterr().err
    assert main(["evaluate", str(own_toy_model), str(moved), "--no-baseline", "--output", str(tmp_path / "ev")]) == 0
    modeling.update_record(own_toy_model, data=str(moved), data_path=str(moved))
    moved.write_text(moved.read_text().replace("great", "grand"))  # the same file, changed since training
    assert main(["evaluate", str(own_toy_model), "--no-baseline", "--output", str(tmp_path / "ev")]) == 0
    assert "differs from the one recorded when the model was trained" in capsys.readouterr().err


def test_predict_file_refuses_to_overwrite_a_complete_output(toy_model, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("a great fun film\n")
    predict_file(Classifier.load(toy_model), source, tmp_path / "out.jsonl", progress=False)
    with pytest.raises(ValueError, match="already exists and is complete; pass --overwrite"):
        predict_file(Classifier.load(toy_model), source, tmp_path / "out.jsonl", progress=False)
    assert predict_file(Classifier.load(toy_model), source, tmp_path / "out.jsonl", progress=False, overwrite=True) == 1


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_interrupted_scoring_resumes_where_it_stopped(toy_model, tmp_path, suffix, monkeypatch):
    from critic.inference import files

    texts = synthetic.reviews(50, seed=9)["text"].tolist()
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    target = tmp_path / f"out{suffix}"
    clf = Classifier.load(toy_model, precision="fp32")
    real = files._score_chunk
    calls = []

    def dies_on_third_chunk(*args):
        calls.append(1)
        if len(calls) == 3:
            # a partial write lands in the file before the crash; the resume must drop it
            if suffix != ".parquet":
                with open(target.with_name(target.name + ".partial"), "a") as f:
                    f.write('{"id": 999, "te' if suffix == ".jsonl" else '999,"half a ro')
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(files, "_score_chunk", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        predict_file(clf, source, target, chunk=10, progress=False)
    assert json.loads(target.with_name(target.name + ".progress.json").read_text())["rows"] == 20
    monkeypatch.setattr(files, "_score_chunk", real)
    assert predict_file(clf, source, target, chunk=10, progress=False) == 50
    read = {".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True), ".parquet": pd.read_parquet}[suffix]
    scored = read(target)
    assert scored["id"].tolist() == list(range(50))
    fresh = clf.predict_proba(texts)
    assert np.allclose(scored["p_positive"], fresh[:, 1], atol=1e-5)
    assert not target.with_name(target.name + ".progress.json").exists()


def test_non_utf8_row_is_named_and_rows_before_it_are_kept(toy_model, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"a great fun film\n" * 5 + b"caf\xe9 awful\n" + b"good\n")
    target = tmp_path / "out.csv"
    with pytest.raises(ValueError, match=r"in.txt, line 6: not UTF-8 text"):
        predict_file(Classifier.load(toy_model), source, target, chunk=5, progress=False)
    assert len(pd.read_csv(tmp_path / "out.csv.partial")) == 5  # the first chunk was scored and kept, ready to resume
    assert not target.exists()  # the output appears whole, at the end


def test_a_one_megabyte_review(toy_model):
    clf = Classifier.load(toy_model)
    huge = "the plot was great and fun . " * 35_000
    assert len(huge) > 1_000_000
    assert clf.predict([huge, "awful"]) == ["positive", "negative"]
    windows = Classifier.load(toy_model, long_reviews="windows")
    assert windows.predict([huge]) == ["positive"]


def test_windows_pooling_rules():
    from critic.inference.predict import pool_windows

    logits = np.array([[0.0, 2.0], [1.0, 0.0], [3.0, 0.0], [0.0, 0.5]])
    owners = np.array([0, 0, 1, 1])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mean_prob = pool_windows(logits, owners, 2, "mean-prob")
    assert np.allclose(mean_prob, [probs[:2].mean(0), probs[2:].mean(0)])
    mean_logit = pool_windows(logits, owners, 2, "mean-logit")
    assert np.allclose(mean_logit[0], np.exp([0.5, 1.0]) / np.exp([0.5, 1.0]).sum())
    confident = pool_windows(logits, owners, 2, "max-confidence")
    assert np.allclose(confident, [probs[0], probs[2]])


@pytest.mark.parametrize("pool", ["mean-prob", "mean-logit", "max-confidence"])
def test_windows_equal_truncation_for_short_texts_and_batch_equals_single(toy_model, pool):
    plain = Classifier.load(toy_model, precision="fp32")
    windowed = Classifier.load(toy_model, precision="fp32", long_reviews="windows", stride=10, pool=pool)
    short = ["a great fun film", "awful boring mess"]
    assert np.allclose(plain.predict_proba(short), windowed.predict_proba(short), atol=1e-6)
    long = synthetic.reviews(12, seed=3, min_words=40, max_words=90)["text"].tolist()
    together = windowed.predict_proba(long)
    alone = np.vstack([windowed.predict_proba([t]) for t in long])
    assert np.allclose(together, alone, atol=1e-5)


@pytest.mark.slow  # starts processes or exports to every engine: tens of seconds
def test_export_writes_every_backend_measures_them_and_auto_takes_the_fastest(toy_model, tmp_path, monkeypatch, capsys):
    import shutil

    from critic.inference import backends
    from critic.inference.export import export

    folder = tmp_path / "copy"
    shutil.copytree(toy_model, folder, ignore=shutil.ignore_patterns("checkpoint", "onnx", "openvino"))
    with pytest.raises(FileNotFoundError, match="run `critic export"):
        Classifier.load(folder, backend="onnx")
    report = export(folder)
    assert report["onnx_max_abs_diff"] < 1e-4  # fp32
    for name in ("onnx-int8", "openvino", "openvino-int8"):  # int8, and OpenVINO in bf16 on a chip that has it
        assert report[f"{name}_max_abs_diff"] < 0.02, name
    measured = json.loads((folder / "critic.json").read_text())["backends"]
    assert set(measured["reviews_per_s"]) == {"torch", *backends.ENGINES} and measured["cpu"] == backends.cpu_name()
    assert measured["ranking"] == sorted(measured["ranking"], key=lambda n: -measured["reviews_per_s"][n])
    assert Classifier.load(folder, device="cpu").backend == measured["ranking"][0]  # the fastest measured
    texts = synthetic.reviews(30, seed=11)["text"].tolist()
    reference = Classifier.load(folder, backend="torch", precision="fp32", long_reviews="windows").predict_proba(texts)
    for name in backends.ENGINES:  # what critic adds (here sliding windows) works on every backend
        scored = Classifier.load(folder, backend=name, long_reviews="windows").predict_proba(texts)
        assert np.abs(scored - reference).max() < (1e-4 if name == "onnx" else 0.05), name
        assert (scored.argmax(1) == reference.argmax(1)).mean() >= 0.9

    # an explicit precision is a request: auto takes only a backend that computes in it, and says which it took;
    # an engine named with a precision it does not compute in is refused (before: fp32 asked, OpenVINO int8 ran)
    record = json.loads((folder / "critic.json").read_text())
    record["backends"]["ranking"] = ["openvino-int8", "onnx-int8", "onnx", "torch"]
    (folder / "critic.json").write_text(json.dumps(record))
    exact = Classifier.load(folder, device="cpu", precision="fp32")
    assert (exact.backend, exact.precision) == ("onnx", "fp32")
    assert (
        np.abs(
            exact.predict_proba(texts) - Classifier.load(folder, backend="torch", precision="fp32").predict_proba(texts)
        ).max()
        < 1e-4
    )
    assert "scoring with onnx" in capsys.readouterr().err
    assert Classifier.load(folder, device="cpu").precision == "int8"  # what it computes in, not what was asked
    with pytest.raises(ValueError, match="backend openvino-int8 computes in int8, not fp32"):
        Classifier.load(folder, backend="openvino-int8", precision="fp32")
    # a record naming a backend this version does not know, or without a ranking, counts as not measured
    record["backends"]["ranking"] = ["tensorrt", "onnx"]
    assert backends.measured_choice(record["backends"], folder) == "onnx"
    assert backends.measured_choice({"cpu": backends.cpu_name()}, folder) is None

    # a backend that lost accuracy is never taken, nor one whose files went; another CPU's figures are not used
    record["backends"]["ranking"] = ["openvino-int8", "onnx", "torch"]
    assert backends.measured_choice(record["backends"], folder) == "openvino-int8"
    shutil.rmtree(folder / "openvino")
    assert backends.measured_choice(record["backends"], folder, say=print) == "onnx"
    assert "not using openvino-int8, measured fastest: " in capsys.readouterr().out
    record["backends"]["cpu"] = "another CPU"
    assert backends.measured_choice(record["backends"], folder) is None

    # without a measurement: PyTorch where the chip has bf16 (not when serving), else ONNX int8
    modeling.update_record(folder, backends=None)
    monkeypatch.setattr(modeling, "cpu_has_bf16", lambda: False)
    assert Classifier.load(folder, device="cpu").backend == "onnx-int8"
    monkeypatch.setattr(modeling, "cpu_has_bf16", lambda: True)
    assert Classifier.load(folder, device="cpu").backend == "torch"
    assert Classifier.load(folder, device="cpu", serving=True).backend == "onnx-int8"


def test_export_names_the_extra_to_install_and_refuses_an_int8_model_that_loses_accuracy(
    toy_model, tmp_path, monkeypatch
):
    import shutil

    from critic.inference import backends
    from critic.inference import export as exporting

    monkeypatch.setattr(backends, "installed", lambda name: not name.startswith("openvino"))
    with pytest.raises(ImportError, match=r"pip install 'critic\[openvino\]'"):
        exporting.export(toy_model, ["openvino"])
    monkeypatch.undo()
    folder = tmp_path / "copy"
    shutil.copytree(toy_model, folder, ignore=shutil.ignore_patterns("checkpoint", "onnx", "openvino"))
    real = Classifier.predict_proba

    def int8_flips_a_fifth(self, texts, *args, **kwargs):
        probs = real(self, texts, *args, **kwargs)
        if self.backend == "onnx-int8":
            probs[: len(probs) // 5] = probs[: len(probs) // 5, ::-1]
        return probs

    monkeypatch.setattr(Classifier, "predict_proba", int8_flips_a_fifth)

    def cannot_convert(*args):
        raise RuntimeError("Cannot create Einsum layer\nwith more detail")

    monkeypatch.setattr(exporting, "export_openvino", cannot_convert)  # an architecture an engine cannot take
    lines = []
    measured = exporting.export(folder, ["onnx", "onnx-int8", "openvino"], log=lines.append)["backends"]
    assert "openvino left out: bert could not be converted (RuntimeError: Cannot create Einsum layer)" in lines
    assert "onnx-int8" in measured["refused"] and "onnx-int8" not in measured["ranking"]
    assert "accuracy points against PyTorch" in measured["refused"]["onnx-int8"]
    assert set(measured["reviews_per_s"]) == {"torch", "onnx", "onnx-int8"}


def test_an_export_of_other_weights_is_never_used(toy_model, tmp_path, capsys):
    """Retraining into a folder whose onnx/ stayed behind served the old model (security review 7): an export is
    tied to the weights' sha256, refused or passed over with any other, and removed by a new save."""
    import shutil

    import torch

    from critic.inference.export import export

    folder = tmp_path / "copy"
    shutil.copytree(toy_model, folder, ignore=shutil.ignore_patterns("checkpoint"))
    export(folder, ["onnx"])
    model, tokenizer, record = modeling.load(folder)
    with torch.no_grad():
        model.classifier.bias += torch.tensor([2.0, -2.0])  # another model: leans negative
    other = tmp_path / "other"
    modeling.save(model, tokenizer, other, record)
    stale = folder / "model.safetensors"
    stale.write_bytes((other / "model.safetensors").read_bytes())  # weights replaced behind the export's back
    with pytest.raises(ValueError, match="was made from other weights"):
        Classifier.load(folder, backend="onnx")
    assert Classifier.load(folder, device="cpu", serving=True).backend == "torch"
    assert (
        "not using onnx, measured fastest" in capsys.readouterr().err
        or json.loads((folder / "critic.json").read_text())["backends"]["ranking"][0] == "torch"
    )
    export(folder, ["onnx"])
    assert Classifier.load(folder, backend="onnx").backend == "onnx"
    modeling.save(model, tokenizer, folder, record)  # the same weights saved again: the export stays
    assert (folder / "onnx" / "model.onnx").is_file()
    assert Classifier.load(folder, backend="onnx").backend == "onnx"  # hashed once, then known by size and time
    stat = (folder / "model.safetensors").stat()
    assert json.loads((folder / "onnx" / modeling.EXPORT_RECORD).read_text())["stat"] == [
        stat.st_size,
        stat.st_mtime_ns,
    ]
    with torch.no_grad():
        model.classifier.bias -= torch.tensor([2.0, -2.0])
    modeling.save(model, tokenizer, folder, record)  # new weights: the export goes
    assert not (folder / "onnx").exists()


def test_exporting_one_backend_keeps_the_earlier_exports_in_the_record_and_the_measurement(toy_model, tmp_path):
    """Before, `critic export --backends onnx-int8` after an export of onnx measured onnx-int8 and PyTorch alone,
    so `--backend auto` no longer saw the onnx export, and the record forgot its parity."""
    import shutil

    from critic.inference.export import export

    folder = tmp_path / "copy"
    shutil.copytree(toy_model, folder, ignore=shutil.ignore_patterns("checkpoint", "onnx", "openvino"))
    export(folder, ["onnx"])
    export(folder, ["onnx-int8"])
    record = json.loads((folder / "critic.json").read_text())
    assert set(record["backends"]["reviews_per_s"]) == {"torch", "onnx", "onnx-int8"}
    assert {"onnx_max_abs_diff", "onnx-int8_max_abs_diff"} <= set(record["exports"])


def test_plain_text_skips_blank_lines_and_keeps_line_numbers(toy_model, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("a great fun film\n\nawful boring mess\n\n")
    assert predict_file(Classifier.load(toy_model), source, tmp_path / "out.csv", progress=False) == 2
    assert pd.read_csv(tmp_path / "out.csv")["text"].tolist() == ["a great fun film", "awful boring mess"]


# ------------------------------------------------------------------------------ file scoring keeps files safe


def test_predict_file_never_writes_over_its_input(toy_model, tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_text("review\na great fun film\nawful boring mess\n")
    original = source.read_bytes()
    link = tmp_path / "link.csv"
    link.symlink_to(source)
    clf = Classifier.load(toy_model)
    for target in (source, link):
        with pytest.raises(ValueError, match="(is the input file itself|is a link)"):
            predict_file(clf, source, target, progress=False, overwrite=True)
    assert source.read_bytes() == original
    assert main(["predict", str(toy_model), "--file", str(source), "--output", str(source), "--overwrite"]) == 2
    assert source.read_bytes() == original


def test_overwrite_keeps_the_previous_output_until_the_new_one_is_whole(toy_model, tmp_path, monkeypatch):
    from critic.inference import files

    source = tmp_path / "in.txt"
    source.write_text("a great fun film\n" * 30)
    target = tmp_path / "out.csv"
    target.write_text("an earlier result\n")

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "_score_chunk", crash)
    with pytest.raises(KeyboardInterrupt):
        predict_file(Classifier.load(toy_model), source, target, chunk=10, progress=False, overwrite=True)
    assert target.read_text() == "an earlier result\n"


def test_a_resume_must_match_the_input_model_and_options(toy_model, tmp_path, monkeypatch):
    from critic.inference import files

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in synthetic.reviews(30, seed=2)["text"]))
    target = tmp_path / "out.parquet"
    clf = Classifier.load(toy_model, precision="fp32")
    real = files._score_chunk
    calls = []

    def dies_on_second_chunk(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(files, "_score_chunk", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        predict_file(clf, source, target, chunk=10, progress=False)
    monkeypatch.setattr(files, "_score_chunk", real)
    with pytest.raises(ValueError, match="another the options"):
        predict_file(clf, source, target, text_column="text", chunk=10, progress=False)
    with pytest.raises(ValueError, match="another the model"):
        predict_file(Classifier.load(toy_model, long_reviews="windows"), source, target, chunk=10, progress=False)
    with open(source, "a") as f:
        f.write(json.dumps({"text": "one more review"}) + "\n")
    with pytest.raises(ValueError, match="another the input file"):
        predict_file(clf, source, target, chunk=10, progress=False)
    # --overwrite starts over and clears the interrupted run's Parquet parts: no row twice, none stale
    stale = files.parts_folder(target.with_name(target.name + ".partial")) / "part-000010.parquet"
    pd.DataFrame({"text": ["stale"], "label": ["x"]}).to_parquet(stale)
    assert predict_file(clf, source, target, chunk=10, progress=False, overwrite=True) == 31
    scored = pd.read_parquet(target)
    assert len(scored) == 31 and "stale" not in scored["text"].tolist()


def test_parquet_output_takes_a_column_that_starts_empty(toy_model, tmp_path):
    source = tmp_path / "in.jsonl"
    rows = [
        {"text": "a great fun film", "note": None},
        {"text": "awful mess", "note": None},
        {"text": "the best film", "note": "seen twice"},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    target = tmp_path / "out.parquet"
    assert predict_file(Classifier.load(toy_model), source, target, chunk=2, progress=False) == 3
    import pyarrow.parquet as pq

    assert pq.read_table(target).column("note").to_pylist() == [None, None, "seen twice"]


def test_parquet_output_takes_a_column_whose_type_changes(toy_model, tmp_path):
    """Before: an `id` that is an int in the first chunk and a string later failed the join ("Unable to merge"), and
    every rerun the same way; a chunk holding both failed its write. Now such a column is text throughout."""
    source = tmp_path / "in.jsonl"
    rows = [{"id": i, "text": "a great fun film", "tags": ["a"]} for i in range(3)]
    rows += [{"id": "x-3", "text": "awful mess", "tags": {"b": 1}}, {"id": 4, "text": "the best film", "tags": None}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    target = tmp_path / "out.parquet"
    assert predict_file(Classifier.load(toy_model), source, target, chunk=3, progress=False) == 5
    import pyarrow.parquet as pq

    table = pq.read_table(target)
    assert table.column("id").to_pylist() == ["0", "1", "2", "x-3", "4"]
    assert table.column("tags").to_pylist() == ['["a"]', '["a"]', '["a"]', '{"b": 1}', None]


def test_scoring_never_follows_a_link_nor_touches_a_file_it_did_not_write(toy_model, tmp_path):
    """Before: a TARGET.partial.parts link was followed and a Spark-style part file in its target joined into the
    output and deleted; an input named TARGET.partial was deleted before it was read."""
    classifier = Classifier.load(toy_model)
    spark = tmp_path / "spark"
    spark.mkdir()
    pd.DataFrame({"text": ["someone else's"]}).to_parquet(spark / "part-00000-abc.parquet")
    source = tmp_path / "in.csv"
    pd.DataFrame({"text": ["a great fun film", "awful mess"]}).to_csv(source, index=False)
    (tmp_path / "out.parquet.partial.parts").symlink_to(spark)
    with pytest.raises(ValueError, match="out.parquet.partial.parts is a link"):
        predict_file(classifier, source, tmp_path / "out.parquet", progress=False)
    assert (spark / "part-00000-abc.parquet").is_file()
    named_like_partial = tmp_path / "out.csv.partial"
    source.rename(named_like_partial)
    with pytest.raises(ValueError, match="is the input file itself"):
        predict_file(classifier, named_like_partial, tmp_path / "out.csv", progress=False)
    named_like_partial.rename(source)  # untouched
    own = tmp_path / "own.parquet.partial.parts"  # a real folder of that name: only critic's parts are touched
    own.mkdir()
    (own / "notes.txt").write_text("mine")
    assert predict_file(classifier, source, tmp_path / "own.parquet", progress=False) == 2
    assert (own / "notes.txt").read_text() == "mine" and len(pd.read_parquet(tmp_path / "own.parquet")) == 2


def test_the_inputs_own_label_columns_are_kept(toy_model, tmp_path):
    source = tmp_path / "in.csv"
    pd.DataFrame(
        {"review": ["a great fun film", "awful boring mess"], "label": ["mine", "mine"], "p_positive": [0.5, 0.5]}
    ).to_csv(source, index=False)
    target = tmp_path / "out.csv"
    predict_file(Classifier.load(toy_model), source, target, progress=False)
    scored = pd.read_csv(target)
    assert list(scored.columns) == [
        "review",
        "label",
        "p_positive",
        "critic_label",
        "critic_p_negative",
        "critic_p_positive",
    ]
    assert scored["label"].tolist() == ["mine", "mine"] and scored["critic_label"].tolist() == ["positive", "negative"]


def test_csv_output_neutralises_formulas(toy_model, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text('review,id\n"=HYPERLINK(""http://x"",""a great fun film"")",-3\n@SUM(1) awful mess,+7a\n')
    target = tmp_path / "out.csv"
    predict_file(Classifier.load(toy_model), source, target, progress=False)
    scored = pd.read_csv(target, dtype=str)
    assert scored["review"].tolist() == ['\'=HYPERLINK("http://x","a great fun film")', "'@SUM(1) awful mess"]
    assert scored["id"].tolist() == ["-3", "'+7a"]  # a number stays a number


def test_many_texts_are_encoded_by_worker_processes_as_one_process_would(toy_model, monkeypatch, tmp_path):
    """The encoder's worker processes (a GPU's host side) clean and tokenize as the model's own process does: the
    same tokens, in order, and the same probabilities; on a CPU by default there are none."""
    from critic.inference import encoding

    texts = [f"Review {i}: a <br /><br />wonderful &amp; moving film" + " so dull" * (i % 7) for i in range(301)]
    serial = Classifier.load(toy_model, backend="torch", precision="fp32")
    assert serial.encoder_pool is None
    pooled = Classifier.load(toy_model, backend="torch", precision="fp32", encoder_workers=2)
    try:
        ours, theirs = serial.encode(texts), pooled.encode(texts)
        assert pooled.encoder_pool._pool is not None  # the workers encoded them
        assert np.array_equal(ours.ids, theirs.ids) and np.array_equal(ours.offsets, theirs.offsets)
        assert np.allclose(serial.predict_proba(texts, chunk=128), pooled.predict_proba(texts, chunk=128), atol=1e-6)
    finally:
        pooled.close()
    # critic evaluate reads its split through them too (the training split: 800 reviews): the same figures
    data = toy_model.parent / "toy.csv"
    with_workers, without = (
        critic.evaluate_model(toy_model, data, "train", output=tmp_path / str(n), baseline=False, encoder_workers=n)
        for n in (2, 0)
    )
    assert with_workers["accuracy"] == without["accuracy"] and with_workers["ece"] == without["ece"]
    monkeypatch.setattr(encoding, "usable_cores", lambda: 16)
    assert (encoding.resolve_workers("auto", "cuda"), encoding.resolve_workers("auto", "cpu")) == (14, 0)
    with pytest.raises(ValueError, match="a number of processes"):
        encoding.resolve_workers("many", "cuda")


def test_export_never_writes_through_a_link(own_toy_model, tmp_path):
    """Before: `critic export` wrote its files through an onnx/ (or openvino/) link, wherever it pointed."""
    from critic.inference.export import export

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (own_toy_model / "onnx").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="onnx is a link; remove it"):
        export(own_toy_model, ["onnx"])
    assert list(elsewhere.iterdir()) == []


def test_loading_a_model_never_writes_to_its_folder(own_toy_model):
    """Before: loading finished a staged save found in .saving/, so a folder someone handed over could swap in
    weights other than the ones a user had checked."""
    from critic import modeling

    staged = own_toy_model / modeling.SAVING
    staged.mkdir()
    (staged / "model.safetensors").write_bytes(b"other weights")
    (staged / modeling.COMPLETE).write_text("")
    weights = (own_toy_model / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="cut short while moving in; `critic export"):
        Classifier.load(own_toy_model)
    assert (own_toy_model / "model.safetensors").read_bytes() == weights and (staged / "model.safetensors").is_file()


def test_an_onnx_model_whose_external_data_leaves_its_folder_is_refused_by_both_engines(tmp_path):
    """The second security review left this unchecked: an ONNX file handed over in a model folder can name external
    weights anywhere (`../secret.bin`). ONNX Runtime and OpenVINO, as critic runs them, both refuse it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from critic.inference import backends

    np.ones(4, dtype=np.float32).tofile(tmp_path / "secret.bin")
    weight = numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input_ids", "w"], ["logits"])],
        "hostile",
        [helper.make_tensor_value_info("input_ids", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 2])],
        [weight],
    )
    (tmp_path / "model").mkdir()
    path = tmp_path / "model" / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(Exception, match="External data path escapes model directory"):
        backends.onnx_forward(path)
    with pytest.raises(Exception, match="outside the base directory"):
        backends.openvino_forward(path)
