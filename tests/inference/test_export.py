"""Exported ONNX / TorchScript models reproduce TrainedModel.embed to 1e-4 on real preprocessed images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import smartmine
from smartmine.inference import InferenceError
from smartmine.inference.export import export_model


def _batch(model, folder, n: int = 5) -> torch.Tensor:
    from PIL import Image

    files = sorted(folder.rglob("*.png"))[:n]
    return torch.stack([model.transform(Image.open(f)) for f in files])


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_reproduces_embed(photo_run, tmp_path) -> None:
    model = smartmine.load(photo_run[0])
    res = export_model(model, tmp_path / "m.pt", "torchscript")
    assert res.max_abs_diff is not None and res.max_abs_diff <= 1e-4
    x = _batch(model, photo_run[1])
    loaded = torch.jit.load(str(res.path))
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), model.embed(x).numpy(), atol=1e-4)
    meta = json.loads((tmp_path / "m.pt.json").read_text())
    assert meta["input_shape"] == ["batch", 3, 16, 16] and meta["checkpoint_sha256"] == model.checkpoint_sha256


def test_onnx_export_reproduces_embed(photo_run, small_run, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    for run, folder in ((photo_run[0], photo_run[1]), (small_run, None)):
        model = smartmine.load(run)
        res = export_model(model, tmp_path / f"{run.name}.onnx", "onnx")
        assert res.max_abs_diff is not None and res.max_abs_diff <= 1e-4
        x = _batch(model, folder) if folder else torch.randn(7, *model.input_shape)
        session = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"images": x.numpy()})[0]
        np.testing.assert_allclose(got, model.embed(x).numpy(), atol=1e-4)


def test_bad_export_requests(photo_run, tmp_path) -> None:
    model = smartmine.load(photo_run[0])
    with pytest.raises(InferenceError, match="format: expected one of onnx, torchscript"):
        export_model(model, tmp_path / "m.x", "keras")
    with pytest.raises(InferenceError, match="is a folder"):
        export_model(model, tmp_path, "torchscript")
    with pytest.raises(InferenceError, match="differs from the trained one"):
        export_model(model, tmp_path / "m.pt", "torchscript", atol=-1.0)
    assert not (tmp_path / "m.pt").exists() and not list(tmp_path.glob(".m.pt*"))
