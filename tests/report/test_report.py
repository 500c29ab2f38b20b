"""build_report on a tiny real run: every figure present and decodable, tables equal to the logs, comparisons, and
run folders with parts missing (empty, interrupted, no images, a metric one run lacks)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from report_helpers import FAST, copy_run, edit_config, load_img, page_text, parse, rewrite_metrics, set_mined_strategy

from smartmine.cli import main as cli_main
from smartmine.report import build_report

FIGURES = {
    "curves_training",
    "curves_retrieval",
    "embedding_map",
    "distance_histograms",
    "triplets_smart",
    "retrieval_gallery",
}


def last_eval_row(run: Path) -> dict[str, str]:
    with open(run / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("recall@1")]
    return rows[-1]


def figure_keys(page: Path) -> set[str]:
    return {img["data-figure"] for img in parse(page).images}


def test_every_figure_is_embedded_and_decodes(smart_report):
    images = parse(smart_report).images
    assert {img["data-figure"] for img in images} == FIGURES
    for img in images:
        assert img["src"].startswith("data:image/png;base64,")
        png = load_img(img["src"], smart_report)
        assert png.format == "PNG" and min(png.size) > 100
        assert np.asarray(png.convert("L")).std() > 1.0  # not a blank canvas


def test_final_metrics_table_equals_the_last_evaluation(smart_run, smart_report):
    row = last_eval_row(smart_run)
    cells = parse(smart_report).cells
    for key in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision", "precision@1"):
        i = cells.index(key)
        assert cells[i + 1] == f"{float(row[key]):.3f}", key
    assert "nmi" not in cells  # the tiny run skips NMI, so the table must not invent it


def test_a_finished_run_has_nothing_missing(smart_report):
    assert "Not shown / missing" not in page_text(smart_report).split("Curves per epoch")[0]


def test_png_files_beside_the_page_and_thumbnails_on_the_map(smart_run, smart_report, tmp_path):
    out = build_report([smart_run], out=tmp_path / "r.html", embed_images=False, thumbnails=True, **FAST)
    images = parse(out).images
    assert {img["data-figure"] for img in images} == FIGURES
    for img in images:
        path = out.parent / img["src"]
        assert path.parent == tmp_path / "r_files" and path.is_file()
        assert load_img(img["src"], out).format == "PNG"
    assert "data:image" not in out.read_text()
    plain = next(i for i in parse(smart_report).images if i["data-figure"] == "embedding_map")
    thumbs = next(i for i in images if i["data-figure"] == "embedding_map")
    a = np.asarray(load_img(plain["src"], smart_report).convert("L"), dtype=float)
    b = np.asarray(load_img(thumbs["src"], out).convert("L"), dtype=float)
    # Same seed, same points: only the thumbnails differ, and glyph thumbnails are dark squares on white.
    assert a.shape == b.shape and b.mean() < a.mean() - 1.0


def test_comparison_overlays_runs_and_names_a_missing_metric(smart_run, tmp_path):
    a, b = copy_run(smart_run, tmp_path / "a"), copy_run(smart_run, tmp_path / "b")
    rewrite_metrics(b, drop=("map@r",), scale={"recall@1": 0.5})
    out = build_report([a, b], **FAST)
    assert out == tmp_path / "comparison.html"
    assert figure_keys(out) == {"curves_training", "curves_retrieval", "distance_histograms_0", "distance_histograms_1"}
    cells = parse(out).cells
    header = cells[: cells.index("a")]
    row_a = cells[cells.index("a") : cells.index("a") + len(header)]
    row_b = cells[cells.index("b") : cells.index("b") + len(header)]
    r1 = float(last_eval_row(smart_run)["recall@1"])
    assert row_a[header.index("recall@1")] == f"{r1:.3f}"
    assert row_b[header.index("recall@1")] == f"{float(f'{r1 * 0.5:.6g}'):.3f}"
    assert row_b[header.index("map@r")] == "—"
    assert f'<td class="best">{r1:.3f}</td>' in out.read_text()  # a's recall@1 is the best
    text = page_text(out)
    assert "map@r: not recorded for b" in text and "b: map@r was not recorded." in text


def test_empty_run_folder_reports_what_is_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    out = build_report([tmp_path / "empty"])
    text = page_text(out)
    assert out == tmp_path / "empty" / "report.html"
    assert "No epoch has finished yet" in text and "config.yaml is missing" in text
    assert "No test embeddings saved yet" in text and "No mined-triplet samples recorded yet" in text
    assert parse(out).images == []


def test_interrupted_run(smart_run, tmp_path):
    run = copy_run(smart_run, tmp_path / "cut")
    rewrite_metrics(run, keep_rows=2)
    shutil.rmtree(run / "embeddings")
    out = build_report([run], **FAST)
    text = page_text(out)
    assert "unfinished or was interrupted: 2 of 3 epoch(s) logged" in text
    assert "No test embeddings saved yet" in text
    assert figure_keys(out) == {"curves_training", "curves_retrieval", "triplets_smart"}


def test_last_logged_epoch_without_evaluation(smart_run, tmp_path):
    run = copy_run(smart_run, tmp_path / "noeval")
    rewrite_metrics(run, keep_rows=2)
    with open(run / "metrics.csv") as fh:
        lines = fh.read().splitlines()
    header = lines[0].split(",")
    last = lines[-1].split(",")
    blank = [
        i
        for i, h in enumerate(header)
        if h.startswith("recall@") or h in ("map@r", "r_precision", "precision@1", "embedding_spread")
    ]
    lines[-1] = ",".join("" if i in blank else v for i, v in enumerate(last))
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    text = page_text(build_report([run], **FAST))
    assert "2 of 3 epoch(s) logged, the last logged epoch has no evaluation" in text
    assert "Test metrics at the latest evaluation (epoch 1)" in text


def test_run_without_images_lists_indices_instead(smart_run, tmp_path):
    run = copy_run(smart_run, tmp_path / "noimg")
    edit_config(run, data={"name": "cub100", "root": str(tmp_path / "nowhere"), "options": {}})
    out = build_report([run], **FAST)
    text = page_text(out)
    assert "config.yaml does not validate any more" in text and "could not be loaded" in text
    assert "listed by training-set row instead" in text and "listed by test-set row instead" in text
    assert figure_keys(out) == {"curves_training", "curves_retrieval", "embedding_map", "distance_histograms"}
    cells = parse(out).cells
    # The table lists each recorded epoch's triplet per gallery anchor; check the first one that has a positive (an
    # epoch whose κ admits none of the gallery anchors records them without triplets).
    found = [(e, t) for e in (2, 3) for t in json.loads((run / "mined" / f"epoch_{e:03d}.json").read_text())["triplets"]
             if t["positive"] is not None]  # fmt: skip
    assert found, "no gallery anchor has a mined triplet in any epoch"
    epoch, first = found[0]
    rows = [cells[j : j + 6] for j in range(len(cells) - 5)
            if cells[j] == str(epoch) and cells[j + 1] == str(first["anchor"])]  # fmt: skip
    assert rows and rows[0][2] == str(first["positive"]) and rows[0][3] == str(first["negative"])
    assert rows[0][4] == f"{first['d_ap']:.3f}" and rows[0][5] == f"{first['d_an']:.3f}"


def test_distance_weighted_gallery_at_chosen_epochs(smart_run, tmp_path):
    run = copy_run(smart_run, tmp_path / "dw")
    set_mined_strategy(run, "distance_weighted")
    edit_config(run, mining={"strategy": "distance_weighted"}, loss={"name": "margin", "global_weight": 0.0})
    out = build_report([run], triplet_epochs=[2, 99], **FAST)
    assert "triplets_distance_weighted" in figure_keys(out)
    text = page_text(out)
    assert "Mined triplets (distance_weighted)" in text
    assert "No mined triplets recorded for epoch(s) 99 (recorded: 2, 3)" in text
    assert "at epochs 2: the anchor" in text  # the caption names exactly the chosen epoch


def test_embeddings_that_do_not_match_the_labels_are_left_out(smart_run, tmp_path):
    run = copy_run(smart_run, tmp_path / "bad")
    np.save(run / "embeddings" / "test_last.npy", np.zeros((3, 16), dtype=np.float32))
    out = build_report([run], **FAST)
    assert "test_last.npy has shape (3, 16)" in page_text(out)
    assert "embedding_map" not in figure_keys(out)


def test_cli_report_default_output(smart_run, tmp_path, capsys):
    run = copy_run(smart_run, tmp_path / "cli")
    shutil.rmtree(run / "embeddings")  # keeps the CLI test fast (no t-SNE)
    assert cli_main(["report", str(run)]) == 0
    assert (run / "report.html").is_file()
    assert f"wrote {run / 'report.html'}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"runs": []}, "runs"),
        ({"runs": ["/nonexistent/run"]}, "runs"),
        ({"runs": ["."], "map_method": "pca"}, "map_method"),
        ({"runs": ["."], "max_map_points": 2}, "max_map_points"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_report(**kwargs)
