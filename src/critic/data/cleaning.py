"""Cleaning recipes for review text: default (HTML line breaks, URLs, spaces), the starting notebook's regexes, or
none. The recipe is saved with a model, and its tokenizer carries the default one."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from critic.data.reading import DataError

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


_SPACES = re.compile(r"\s+")


_URL = re.compile(r"https?://\S+|www\.\S+")


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


_NOTEBOOK_DROP = re.compile(r"[\\\"'*]")


def clean_none(text: str) -> str:
    return text


def clean_default(text: str) -> str:
    """Unescape HTML entities and turn <br /> into spaces; keep case, accents and punctuation."""
    return _SPACES.sub(" ", _BR.sub(" ", html.unescape(text))).strip()


def clean_notebook(text: str) -> str:
    """The starting notebook's rules: lowercase, drop non-ASCII, URLs, <br /> tags, backslashes, quotes, asterisks."""
    text = text.lower()
    text = _NON_ASCII.sub("", text)
    text = _URL.sub("", text)
    text = _BR.sub(" ", text)
    text = _NOTEBOOK_DROP.sub("", text)
    return _SPACES.sub(" ", text).strip()


CLEANERS: dict[str, Callable[[str], str]] = {"none": clean_none, "default": clean_default, "notebook": clean_notebook}


def cleaner(name: str) -> Callable[[str], str]:
    try:
        return CLEANERS[name]
    except KeyError:
        raise DataError(f"unknown cleaning recipe '{name}'; choose one of: {', '.join(CLEANERS)}") from None
