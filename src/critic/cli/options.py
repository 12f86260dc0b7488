"""The options several verbs share, written once: reading a file, and the training settings (from the config
family's fields)."""

from __future__ import annotations

import argparse


def data_options(parser: argparse.ArgumentParser) -> None:
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


def columns_of_args(args):
    from critic import data

    return data.columns_of(vars(args))


def train_options(parser: argparse.ArgumentParser, config_class=None) -> None:
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


def train_config(args):
    import dataclasses

    from critic import config
    from critic.config import TrainConfig

    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig)}
    return config.build(overrides, args.config)
