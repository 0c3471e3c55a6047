"""The pieces of a self-contained HTML page: escaped text, tables, images embedded as data: URIs, and the page around
them. The markup is also well-formed XML (every element closed, void elements self-closed, text escaped), so a test
can parse it strictly; the page loads nothing from anywhere (no script, font or stylesheet outside it)."""

from __future__ import annotations

import base64
import html
import io
from typing import Iterable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
.banner { background: #fff3cd; border: 1px solid #e0c060; padding: 0.5em 1em; }
.samples td { text-align: center; } .samples img { image-rendering: pixelated; max-width: 320px; }
code { font-size: 0.85em; background: #f4f4f4; padding: 0 0.2em; }
nav a { margin-right: 1em; }
"""


def text(value: object) -> str:
    """`value` as HTML text, escaped."""
    return html.escape(str(value), quote=True)


def paragraph(content: str, css: str = "note") -> str:
    """A paragraph of already-escaped `content`."""
    return f'<p class="{css}">{content}</p>'


def heading(level: int, title: str, anchor: str | None = None) -> str:
    """A heading; with `anchor`, the target of a link to it."""
    ident = f' id="{text(anchor)}"' if anchor else ""
    return f"<h{level}{ident}>{text(title)}</h{level}>"


def png_uri(data: bytes) -> str:
    """PNG bytes as a data: URI."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """A figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def image(data: bytes, alt: str) -> str:
    """An <img> of PNG bytes, embedded."""
    return f'<img src="{png_uri(data)}" alt="{text(alt)}" />'


def table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A table of `frame`'s columns and rows (index left out): numbers right-aligned and formatted, NaN as –."""
    head = "".join(f"<th>{text(c)}</th>" for c in frame.columns)
    rows = []
    for values in frame.itertuples(index=False):
        cells = []
        for value in values:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                cells.append(f"<td>{'–' if value is None or value is pd.NA else text(value)}</td>")
            else:
                shown = "–" if pd.isna(value) else format(value, floatfmt) if isinstance(value, (float, np.floating)) \
                    else str(value)
                cells.append(f'<td class="n">{text(shown)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def page(title: str, sections: Iterable[str], contents: Iterable[tuple[str, str]] = ()) -> str:
    """The whole page: `title`, a bar of links (anchor, label) and the sections' markup in order."""
    links = "".join(f'<a href="#{text(anchor)}">{text(label)}</a>' for anchor, label in contents)
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8" />'
            '<meta name="viewport" content="width=device-width, initial-scale=1" />'
            f"<title>{text(title)}</title><style>{STYLE}</style></head>\n"
            f"<body>{heading(1, title)}<nav>{links}</nav>\n" + "\n".join(sections) + "\n</body></html>\n")
