"""Helpers of the report tests: parse the page, copy and edit run folders."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import yaml
from PIL import Image

FAST = {"max_map_points": 200}
"""Report options that keep t-SNE cheap in tests."""


class PageParser(HTMLParser):
    """Collects the ``<img>`` elements (attributes), table cells, and the text of the 'missing' boxes."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.cells: list[str] = []
        self.text: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append({k: v or "" for k, v in attrs})
        if tag in ("td", "th"):
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_cell:
            self.cells[-1] += data


def parse(page: Path) -> PageParser:
    parser = PageParser()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def page_text(page: Path) -> str:
    return " ".join(parse(page).text)


def load_img(src: str, page: Path) -> Image.Image:
    """Open an ``<img src>``: a PNG data URI or a file relative to the page (raises if neither)."""
    if src.startswith("data:image/png;base64,"):
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
    else:
        raw = (page.parent / src).read_bytes()
    img = Image.open(io.BytesIO(raw))
    img.load()
    return img


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "report*"))
    return dst


def rewrite_metrics(
    run: Path, keep_rows: int | None = None, drop: tuple[str, ...] = (), scale: dict[str, float] | None = None
) -> list[dict[str, str]]:
    """Rewrite ``metrics.csv``: keep the first ``keep_rows`` rows, drop columns, multiply columns; returns the rows."""
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows = rows[:keep_rows] if keep_rows is not None else rows
    columns = [c for c in rows[0] if c not in drop]
    for row in rows:
        for key, factor in (scale or {}).items():
            if row.get(key):
                row[key] = f"{float(row[key]) * factor:.6g}"
    with open(run / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return [{k: r[k] for k in columns} for r in rows]


def edit_config(run: Path, **sections: dict) -> None:
    raw = yaml.safe_load((run / "config.yaml").read_text())
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    (run / "config.yaml").write_text(yaml.safe_dump(raw))


def set_mined_strategy(run: Path, strategy: str) -> None:
    for path in (run / "mined").glob("epoch_*.json"):
        record = json.loads(path.read_text())
        record["strategy"] = strategy
        record["kappa"] = None
        path.write_text(json.dumps(record))
