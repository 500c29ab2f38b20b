"""smartmine index / search / calibrate / export / embed / eval --query: end to end, and bad input exits 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from smartmine.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_index_search_calibrate_match(photo_run, tmp_path, capsys) -> None:
    run_dir, data = photo_run
    idx = tmp_path / "idx"
    code, out, _ = run(capsys, "index", run_dir, "--images", data, "--out", idx)
    assert code == 0 and "indexed 36 labelled image(s)" in out
    query = sorted(data.rglob("*.png"))[4]
    code, out, _ = run(capsys, "search", idx, query, "--k", "3", "--json")
    (result,) = json.loads(out)
    assert code == 0 and result["query"] == str(query)
    assert result["hits"][0]["path"] == str(query) and result["hits"][0]["label"] == query.parent.name
    assert [h["rank"] for h in result["hits"]] == [1, 2, 3] and result["hits"][0]["match"] is None
    code, out, _ = run(capsys, "calibrate", run_dir, "--precision", "0.2")
    assert code == 0 and "threshold" in out and (run_dir / "calibration.json").exists()
    threshold = json.loads((run_dir / "calibration.json").read_text())["threshold"]
    code, out, _ = run(capsys, "search", idx, query, "--k", "36", "--json")
    hits = json.loads(out)[0]["hits"]
    assert [h["match"] for h in hits] == [h["distance"] <= threshold for h in hits]
    code, out, _ = run(capsys, "search", idx, query, "--k", "2")
    assert code == 0 and "match" in out and str(query) in out
    (run_dir / "calibration.json").unlink()


def test_unlabelled_flat_gallery_and_add(photo_run, tmp_path, capsys) -> None:
    run_dir, data = photo_run
    flat = tmp_path / "flat"
    flat.mkdir()
    files = sorted(data.rglob("*.png"))
    for i, f in enumerate(files[:10]):
        shutil.copy(f, flat / f"{i:02d}.png")
    idx = tmp_path / "idx"
    assert run(capsys, "index", run_dir, "--images", flat, "--out", idx, "--index", "fanng")[0] == 0
    more = tmp_path / "more"
    more.mkdir()
    shutil.copy(files[20], more / "new.png")
    code, out, _ = run(capsys, "index", run_dir, "--images", more, "--out", idx, "--add")
    assert code == 0 and "added 1 image(s)" in out and "11 in all" in out
    manifest = json.loads((idx / "manifest.json").read_text())
    assert manifest["size"] == 11 and manifest["labelled"] is False and manifest["index"] == "fanng"
    code, out, _ = run(capsys, "search", idx, more / "new.png", "--k", "1", "--json")
    assert json.loads(out)[0]["hits"][0]["path"] == str(more / "new.png")


def test_embed_writes_paths_and_npz(photo_run, tmp_path, capsys) -> None:
    run_dir, data = photo_run
    assert run(capsys, "embed", run_dir, "--images", data, "--out", tmp_path / "e.npz")[0] == 0
    z = np.load(tmp_path / "e.npz")
    paths = sorted(str(p) for p in data.rglob("*.png"))
    assert z["embeddings"].shape == (36, 8) and z["paths"].tolist() == paths
    assert [z["class_names"][i] for i in z["labels"]] == [Path(p).parent.name for p in paths]
    assert run(capsys, "embed", run_dir, "--out", tmp_path / "t.npy")[0] == 0  # the test split
    np.testing.assert_allclose(np.load(tmp_path / "t.npy"), np.load(run_dir / "embeddings" / "test_last.npy"),
                               atol=1e-5)
    test_paths = json.loads((tmp_path / "t.paths.json").read_text())
    assert len(test_paths) == len(np.load(tmp_path / "t.labels.npy")) == 18
    assert run(capsys, "embed", run_dir, "--out", tmp_path / "t.txt")[0] == 2


def test_export_and_query_gallery_eval(photo_run, tmp_path, capsys) -> None:
    run_dir, data = photo_run
    code, out, _ = run(capsys, "export", run_dir, "--format", "torchscript", "--out", tmp_path / "m.pt")
    assert code == 0 and "matches embed" in out and (tmp_path / "m.pt").exists()
    rows = ["path,label,is_query,is_gallery"]
    for i, p in enumerate(sorted(data.rglob("*.png"))):
        rows.append(f"{p},{p.parent.name},{int(i % 2)},{int(1 - i % 2)}")
    (tmp_path / "qg.csv").write_text("\n".join(rows) + "\n")
    code, out, _ = run(capsys, "eval", run_dir, "--query", tmp_path / "qg.csv", "--gallery", tmp_path / "qg.csv",
                       "--out", tmp_path / "m.json")
    assert code == 0 and "18 queries" in out and "recall@1" in out
    assert set(json.loads((tmp_path / "m.json").read_text())) >= {"recall@1", "map@r"}


def test_bad_input_exits_2_with_one_line_naming_the_problem(photo_run, tmp_path, capsys) -> None:
    run_dir, data = photo_run
    idx = tmp_path / "idx"
    assert run(capsys, "index", run_dir, "--images", data, "--out", idx)[0] == 0
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    empty = tmp_path / "empty"
    empty.mkdir()
    no_ckpt = tmp_path / "no_ckpt"
    (no_ckpt / "checkpoints").mkdir(parents=True)
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    (broken / "class_1" / "bad.png").write_bytes(b"garbage")
    other = tmp_path / "other_run"
    shutil.copytree(run_dir, other)
    with open(other / "checkpoints" / "best.pt", "ab") as fh:  # same weights, but another file: another checkpoint
        fh.write(b"\0")
    cases = [
        (("search", idx, notes), "notes.txt"),
        (("index", run_dir, "--images", empty, "--out", tmp_path / "x1"), "no images found"),
        (("index", no_ckpt, "--images", data, "--out", tmp_path / "x2"), "no checkpoint in"),
        (("index", run_dir, "--images", broken, "--out", tmp_path / "x3"), "bad.png"),
        (("search", idx, notes, "--run", other), "not comparable"),
        (("search", tmp_path / "nope", notes), "no such index folder"),
        (("index", run_dir, "--images", data, "--out", idx), "already exists"),
        (("eval", tmp_path / "nope"), "no such run folder"),
        (("train", "quikstart"), "did you mean 'quickstart'"),
    ]
    for args, message in cases:
        code, _, err = run(capsys, *args)
        assert code == 2, (args, err)
        assert message in err and err.count("\n") == 1, (args, err)
    assert not any(p.name.startswith((".x", "x")) for p in tmp_path.iterdir())  # nothing half-written


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    from smartmine import __version__

    assert capsys.readouterr().out.strip() == f"smartmine {__version__}"


def test_interrupted_message_names_the_real_run(tmp_path, monkeypatch) -> None:
    from smartmine import cli

    run_dir = tmp_path / "my run"
    (run_dir / "checkpoints").mkdir(parents=True)
    command = ["smartmine", "train", "cfg.yaml", "--resume", "--run-dir", str(run_dir), "--set", "train.epochs=3"]
    monkeypatch.setattr(cli, "_ACTIVE", {"run_dir": run_dir, "command": command})
    assert "start again with: smartmine train cfg.yaml --overwrite --run-dir" in cli._interrupted_message()
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")
    msg = cli._interrupted_message()
    assert msg == f"interrupted; resume with: smartmine train cfg.yaml --resume --run-dir '{run_dir}' --set " \
                  "train.epochs=3"


def test_quickstart_resume_without_checkpoint_is_refused(tmp_path, capsys) -> None:
    code, _, err = run(capsys, "quickstart", "--resume", "--run-dir", tmp_path / "qs", "--no-report")
    assert code == 2 and "no checkpoint" in err
    assert not (tmp_path / "qs").exists()


def test_a_refused_start_leaves_no_run_folder(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no cached weights, whatever this machine has
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  name: digits\nmodel:\n  backbone: resnet50\n  pretrained: true\nmining:\n"
                   "  strategy: random\n  classes_per_batch: 4\ntrain:\n  epochs: 1\n")
    run_dir = tmp_path / "refused"
    code, _, err = run(capsys, "train", cfg, "--run-dir", run_dir, "--no-report")
    assert code == 2 and "pretrained" in err
    assert not run_dir.exists()
