"""The report page: a single static HTML file, no scripts and no network (figures as data URIs or files beside it)."""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from smartmine.report.figures import Plot

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0; color: #222;
       background: #fafafa; }
header { background: #24364b; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 24px; }
header p { margin: 0; opacity: 0.85; font-size: 14px; }
nav { padding: 8px 32px; background: #e8edf3; font-size: 14px; }
nav a { margin-right: 16px; color: #24364b; }
main { padding: 8px 32px 40px 32px; max-width: 1400px; }
section { margin-top: 28px; }
h2 { border-bottom: 2px solid #24364b; padding-bottom: 4px; font-size: 20px; }
h3 { font-size: 16px; margin-bottom: 6px; }
figure { margin: 12px 0 20px 0; }
figure img { max-width: 100%; height: auto; background: #fff; border: 1px solid #ddd; }
figcaption { font-size: 13px; color: #555; max-width: 1000px; margin-top: 4px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; background: #fff; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #e8edf3; }
td.best { font-weight: bold; background: #eaf6ea; }
.missing { background: #fff7e0; border-left: 4px solid #e0a800; padding: 8px 14px; font-size: 13px; }
.missing ul { margin: 4px 0; padding-left: 18px; }
.meta { font-size: 13px; color: #444; }
code { background: #eef; padding: 1px 4px; }
"""


@dataclass
class Table:
    """A table: ``header`` cells and ``rows`` of already-formatted strings; ``best`` marks ``(row, col)`` cells."""

    header: list[str]
    rows: list[list[str]]
    best: set[tuple[int, int]] = field(default_factory=set)
    caption: str = ""


@dataclass
class Section:
    """One ``<section>``: a heading, optional intro text, figures, tables and notes on what is missing."""

    anchor: str
    title: str
    intro: str = ""
    plots: list[Plot] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)


def escape(text: object) -> str:
    """``str(text)`` HTML-escaped, quotes included (safe in element text and attribute values)."""
    return html.escape(str(text), quote=True)


def _notes_html(notes: list[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return f'<div class="missing"><strong>Not shown / missing:</strong><ul>{items}</ul></div>'


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = []
    for r, row in enumerate(table.rows):
        cells = "".join(
            f'<td class="best">{escape(c)}</td>' if (r, j) in table.best else f"<td>{escape(c)}</td>"
            for j, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    caption = f"<caption>{escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class ImageWriter:
    """Turns a :class:`Plot` into an ``<img src>``: a base64 data URI, or a PNG in ``files_dir`` (relative link)."""

    def __init__(self, out: Path, embed: bool) -> None:
        self.out = out
        self.embed = embed
        self.files_dir = out.parent / f"{out.stem}_files"
        self.used: set[str] = set()

    def src(self, plot: Plot) -> str:
        if self.embed:
            return "data:image/png;base64," + base64.b64encode(plot.png).decode("ascii")
        self.files_dir.mkdir(parents=True, exist_ok=True)
        name = plot.key
        i = 2
        while name in self.used:
            name = f"{plot.key}_{i}"
            i += 1
        self.used.add(name)
        path = self.files_dir / f"{name}.png"
        path.write_bytes(plot.png)
        return Path(os.path.relpath(path, self.out.parent)).as_posix()


def _section_html(section: Section, images: ImageWriter, level: int = 2) -> str:
    parts = [f'<section id="{escape(section.anchor)}"><h{level}>{escape(section.title)}</h{level}>']
    if section.intro:
        parts.append(f'<p class="meta">{section.intro}</p>')  # intro is trusted HTML built by the report itself
    parts.append(_notes_html(section.notes))
    for table in section.tables:
        parts.append(_table_html(table))
    for plot in section.plots:
        parts.append(
            f'<figure id="fig-{escape(plot.key)}"><img src="{images.src(plot)}" alt="{escape(plot.title)}" '
            f'data-figure="{escape(plot.key)}"><figcaption>{escape(plot.caption)}</figcaption></figure>'
        )
        parts.append(_notes_html(plot.notes))
    for sub in section.subsections:
        parts.append(_section_html(sub, images, level + 1))
    parts.append("</section>")
    return "".join(parts)


def render_page(title: str, subtitle: str, sections: list[Section], missing: list[str], images: ImageWriter) -> str:
    """The whole page as a string; ``missing`` is the run-level list shown at the top."""
    nav = "".join(f'<a href="#{escape(s.anchor)}">{escape(s.title)}</a>' for s in sections)
    body = "".join(_section_html(s, images) for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body><header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{_notes_html(missing)}{body}</main></body></html>\n"
    )
