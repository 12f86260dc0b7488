"""The verbs over a trained model: critic evaluate, predict, export, explain and monitor."""

from __future__ import annotations

import argparse
from pathlib import Path

from critic.messages import to_stderr


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
    verb.add_argument(
        "--cascade",
        choices=("on", "off"),
        default="on",
        help="on: where the model has a cascade (`critic export --cascade`), its cheap stage answers the reviews it "
        "is sure of and the model the rest; off: the model answers all (default on)",
    )
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
        cascade=args.cascade == "on",
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
        cascade=args.cascade == "on",
    )
    if classifier.cheap_stage is not None:
        to_stderr(
            f"cascade: the cheap stage answers where it is {classifier.cheap_stage.threshold:.4f} sure, the model the "
            "rest (--cascade off: the model alone)"
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
    probs, cheap = classifier.answer(args.texts)
    labels = abstention.answers(probs, classifier.labels, classifier.unsure_below(args.min_accuracy))
    for text, label, p, by_cheap in zip(args.texts, labels, probs, cheap):
        shown = text if len(text) <= 70 else text[:67] + "…"
        print(f"{label}\t{p.max():.3f}\t{shown}" + ("\t(cheap stage)" if by_cheap else ""))
    if args.min_accuracy is not None:
        answered = sum(label != abstention.UNSURE for label in labels)
        to_stderr(f"answered {answered} of {len(labels)}")
    return 0


def say_threshold(classifier, min_accuracy: float | None) -> None:
    from critic.modeling import abstention

    if min_accuracy is not None:
        chosen = classifier.threshold(min_accuracy)
        to_stderr(abstention.describe(chosen, classifier.record.abstention["curve"]["rows"]))


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
    verb.add_argument(
        "--cascade",
        action="store_true",
        help="also fit (again) the cascade's cheap stage (TF-IDF + logistic regression on the training split) and "
        "the confidence above which it answers, chosen on the validation split to keep within --cascade-margin of "
        "the model's accuracy with 95%% confidence (`critic train` fits one at its end)",
    )
    verb.add_argument(
        "--cascade-margin",
        type=float,
        default=0.001,
        help="the accuracy the cascade may give up against the model alone (default 0.001: 0.1 points)",
    )
    verb.add_argument("--cascade-only", action="store_true", help="fit the cascade and export nothing else")
    verb.set_defaults(run=cmd_export)


def cmd_export(args) -> int:
    from critic.inference import cascade
    from critic.inference.backends import ENGINES, installed
    from critic.inference.export import export

    if args.cascade or args.cascade_only:
        cascade.fit(args.model, args.cascade_margin, to_stderr)
        if args.cascade_only:
            return 0
    elif Path(args.model).is_dir() and cascade.load_for(Path(args.model)) is None:
        to_stderr(f"{args.model} has no cascade for its present weights: the model answers alone (--cascade fits one)")
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
