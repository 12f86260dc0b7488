"""critic train, pretrain, tune, distill and quickstart."""

from __future__ import annotations

import argparse
from pathlib import Path

from critic.cli.options import train_config, train_options
from critic.messages import to_stderr


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
    train_options(verb)
    verb.set_defaults(run=cmd_train)


def cmd_train(args) -> int:
    import critic

    cfg = train_config(args)
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
    train_options(verb, PretrainConfig)
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
    train_options(verb)
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
    tune(train_config(args), options, log=to_stderr)
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
    train_options(verb)
    verb.set_defaults(run=cmd_distill)


def cmd_distill(args) -> int:
    args.teacher = ",".join(args.teacher_folder)
    if args.output is None:
        args.output = "runs/" + Path(args.model or "minilm").name + "-distilled"
    return cmd_train(args)


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
    from critic.data import catalogue, sources
    from critic.evaluation.rendering import print_summary
    from critic.training.train import train

    to_stderr("1/4 fetching IMDB and MiniLM")
    sources.fetch(catalogue.IMDB, log=to_stderr)
    sources.fetch(catalogue.MINILM, log=to_stderr)
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
