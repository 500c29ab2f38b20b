"""smartmine.load / TrainedModel.embed: every input form gives the embeddings the run itself computed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import smartmine
from smartmine.data import BadImageError
from smartmine.inference import InferenceError


def _trainer_test_embeddings(run: Path) -> np.ndarray:
    """The test embeddings the trainer saved at its last evaluation (the 1-epoch run's best.pt is that epoch)."""
    return np.load(run / "embeddings" / "test_last.npy")


def test_load_exposes_config_dim_and_transform(photo_run) -> None:
    run, _ = photo_run
    model = smartmine.load(run)
    assert model.embedding_dim == 8 and model.config.data.image_size == 16
    assert model.checkpoint_path == run / "checkpoints" / "best.pt"
    assert model.input_shape == (3, 16, 16)
    assert tuple(model.transform(Image.new("RGB", (40, 30))).shape) == (3, 16, 16)
    assert smartmine.load(run, "last").checkpoint_path.name == "last.pt"


def test_embedding_files_reproduces_the_trainers_test_embeddings(photo_run) -> None:
    run, _ = photo_run
    model = smartmine.load(run, device="cpu")
    dataset, _ = model.load_split("test")
    emb = model.embed(dataset.paths, batch_size=4, progress=False)
    np.testing.assert_allclose(emb.numpy(), _trainer_test_embeddings(run), atol=1e-5)
    np.testing.assert_allclose(emb.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_folder_tensor_and_pil_inputs_agree(photo_run) -> None:
    run, data = photo_run
    model = smartmine.load(run)
    files = sorted(str(p) for p in data.rglob("*.png"))
    by_folder = model.embed(data, progress=False)  # every image below the folder, sorted
    by_files = model.embed(files, progress=False)
    pils = [Image.open(f).convert("RGB") for f in files]
    by_pil = model.embed(pils)
    by_tensor = model.embed(torch.stack([model.transform(p) for p in pils]), batch_size=5)
    one = model.embed(model.transform(pils[3]))
    assert by_folder.shape == (len(files), 8)
    for other in (by_files, by_pil, by_tensor):
        np.testing.assert_allclose(other.numpy(), by_folder.numpy(), atol=1e-6)
    np.testing.assert_allclose(one.numpy(), by_folder[3:4].numpy(), atol=1e-6)


def test_small_image_run_embeds_pil_images_like_its_evaluation(small_run) -> None:
    model = smartmine.load(small_run)
    assert model.input_shape == (1, 8, 8)
    from smartmine.data import load_dataset

    test = load_dataset("digits", split="test")
    emb = model.embed([test.load_pil(i) for i in range(len(test))])
    np.testing.assert_allclose(emb.numpy(), _trainer_test_embeddings(small_run), atol=1e-5)
    # a larger colour image is turned grey and resized to the training size
    assert model.embed(Image.new("RGB", (64, 48), (200, 10, 10))).shape == (1, 8)


def test_bad_inputs_are_refused_naming_the_problem(photo_run, tmp_path) -> None:
    run, data = photo_run
    model = smartmine.load(run)
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        model.embed(torch.zeros(2, 3, 8, 8))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(BadImageError, match="broken.png"):
        model.embed([str(next(data.rglob("*.png"))), str(bad)])
    with pytest.raises(InferenceError, match="no such file or folder"):
        model.embed(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InferenceError, match="no images found"):
        model.embed(empty)


def test_a_run_without_a_checkpoint_is_refused(photo_run, tmp_path) -> None:
    run, _ = photo_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints")
    (copy / "checkpoints").mkdir()
    with pytest.raises(InferenceError, match="no checkpoint in .*best.pt or last.pt"):
        smartmine.load(copy)
    with pytest.raises(InferenceError, match="no such run folder"):
        smartmine.load(tmp_path / "nope")


def test_a_gpu_run_loads_on_the_cpu(photo_run, tmp_path, monkeypatch) -> None:
    """A run trained with train.device=cuda opens on a machine without CUDA (an explicit device= still must exist)."""
    run, _ = photo_run
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    ckpt["config"]["train"]["device"] = "cuda"
    (tmp_path / "checkpoints").mkdir()
    torch.save(ckpt, tmp_path / "checkpoints" / "best.pt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = smartmine.load(tmp_path)
    assert model.device.type == "cpu" and model.config.train.device == "cuda"
    with pytest.raises(InferenceError, match="CUDA is not available"):
        smartmine.load(tmp_path, device="cuda")
