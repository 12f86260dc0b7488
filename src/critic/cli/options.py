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
    """A flag for each of the config's settings, under its concern's heading."""
    from critic.config import TrainConfig, setting_groups

    config_class = config_class or TrainConfig
    parser.add_argument(
        "--config", help=f"a TOML file of settings (a [{config_class.TOML_TABLE}] table or top-level keys)"
    )
    for title, fields in setting_groups(config_class):
        group = parser.add_argument_group(title)
        for f in fields:
            if f.name != "notes":
                setting_option(group, f, config_class)


def setting_option(group, f, config_class) -> None:
    """The flag of one setting (a BOOL flag with its --no- twin), its help ending with its default."""
    from critic.config import field_types

    flag = "--" + f.name.replace("_", "-")
    kind, _ = field_types(config_class)[f.name]
    described = f.metadata["help"].replace("%", "%%")  # argparse formats help texts with %
    if kind is not bool:
        text = described if "(default: " in described else f"{described} (default: {f.default})"  # said better
        group.add_argument(flag, dest=f.name, default=None, metavar=kind.__name__.upper(), help=text)
        return
    text = f"{described} (default: {f.default}; --no-{flag[2:]} for false)"
    group.add_argument(flag, dest=f.name, nargs="?", const="true", default=None, metavar="BOOL", help=text)
    group.add_argument("--no-" + flag[2:], dest=f.name, action="store_const", const="false", help=argparse.SUPPRESS)


def train_config(args):
    import dataclasses

    from critic import config
    from critic.config import TrainConfig

    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig)}
    return config.build(overrides, args.config)
