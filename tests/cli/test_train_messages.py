"""Messages of refused trainings: a --set error blames the --set, a preset is named by name, bad images hint skip."""

from __future__ import annotations

import sys

import pytest

from smartmine.cli import main


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "train.epochs=abc"], "config error: --set train.epochs=abc: train.epochs: expected an integer"),
        (["--set", "train.epoch=3"], "config error: --set train.epoch=3: unknown key 'train.epoch'"),
        (["--set", "data.on_bad_image=maybe"], "config error: --set data.on_bad_image=maybe: data.on_bad_image:"),
    ],
)
def test_set_errors_name_the_set_not_the_preset_file(args, expected, capsys) -> None:
    assert main(["train", "quickstart", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and "site-packages" not in err and "configs/quickstart.yaml" not in err


def test_bad_image_error_suggests_skip(tmp_path, capsys) -> None:
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "inference"))
    from tiny_runs import write_photo_tree

    root = write_photo_tree(tmp_path / "t", classes=4, per_class=3)
    (root / "class_0" / "empty.png").write_bytes(b"")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  name: folder\n  root: {root}\n  image_size: 16\n")
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "empty.png" in err and "data.on_bad_image=skip" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
