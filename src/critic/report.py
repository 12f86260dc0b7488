"""Self-contained HTML pages: matplotlib figures embedded as SVG, tables from plain rows (and the same tables for
the terminal). No JavaScript, no network: a report opens anywhere and can be mailed as one file."""

from __future__ import annotations

import html
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1d2430}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #dde;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #d6dae2;padding:.3em .7em;text-align:right}
th{background:#f3f5f9}td.text{text-align:left;max-width:700px;font-size:.9em}
.grid{display:flex;flex-wrap:wrap;gap:1em}.grid figure{margin:0}.muted{color:#667}
.kpi{display:inline-block;margin:.3em 1.2em .3em 0}.kpi b{display:block;font-size:1.5em}
"""


def figure(width: float = 5.2, height: float = 3.4):
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    ax.grid(alpha=0.3)
    return fig, ax


def svg(fig) -> str:
    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def table(header: Sequence[str], rows: Iterable[Sequence], text_columns: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f"<td class='text'>{html.escape(str(v))}</td>" if i in text_columns else f"<td>{html.escape(_fmt(v))}</td>"
            for i, v in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def terminal_table(title: str | None, header: Sequence[str], rows: Iterable[Sequence[str]]):
    """The same kind of table for the terminal (rich): its title on the left, every column right-aligned."""
    from rich.table import Table

    printed = Table(title=title, title_justify="left")
    for column in header:
        printed.add_column(column, justify="right")
    for row in rows:
        printed.add_row(*row)
    return printed


def kpis(pairs: Iterable[tuple[str, object]]) -> str:
    return "".join(f"<span class='kpi'><b>{html.escape(_fmt(v))}</b>{html.escape(k)}</span>" for k, v in pairs)


def page(title: str, subtitle: str, sections: Iterable[tuple[str, str]]) -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p class='muted'>{html.escape(subtitle)}</p>",
    ]
    for heading, content in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{content}")
    parts.append("</body></html>")
    return "".join(parts)


def write(folder: Path, stem: str, summary: dict, page_html: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / f"{stem}.json", folder / f"{stem}.html"
    json_path.write_text(json.dumps(summary, indent=2, default=_jsonable))
    html_path.write_text(page_html, encoding="utf-8")
    return json_path, html_path


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
