"""Checkpoints and crash-safe writes: exact resume, atomic replace, torn CSV lines, corrupt files, config checks."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from smartmine import _atomic as atomic
from smartmine.training.checkpoint import (
    CheckpointError,
    ConfigMismatchError,
    atomic_append_line,
    atomic_torch_save,
    atomic_write_bytes,
    capture_rng_state,
    check_compatible,
    config_fingerprint,
    csv_row_line,
    load_checkpoint,
    read_csv_rows,
    restore_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

CONFIG = {"seed": 0, "run_dir": "runs/a", "optim": {"lr": 0.01, "optimizer": "adam"}, "train": {"epochs": 4}}


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------------------ atomic writes


def test_atomic_write_replaces_content_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert leftovers(tmp_path) == []


def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"
    atomic_write_bytes(target, b"old complete content")

    def broken_replace(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk went away"):
        atomic_torch_save({"w": torch.ones(3)}, target)
    assert target.read_bytes() == b"old complete content"
    assert leftovers(tmp_path) == []


def test_failure_midway_through_serialisation_keeps_the_old_file(tmp_path):
    target = tmp_path / "ckpt.pt"
    atomic_torch_save({"w": torch.zeros(2)}, target)

    class Exploding:
        def __reduce__(self):
            raise RuntimeError("boom while pickling")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"big": torch.ones(10_000), "bad": Exploding()}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.zeros(2))
    assert leftovers(tmp_path) == []


def test_atomic_write_into_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory does not exist"):
        atomic_write_bytes(tmp_path / "missing" / "f", b"x")


# ------------------------------------------------------------------------------------------------ CSV lines


def test_append_and_read_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    atomic_append_line(path, csv_row_line(["epoch", "loss", "note"]))
    atomic_append_line(path, csv_row_line([1, 0.5, "a, quoted"]))
    atomic_append_line(path, "2,0.25,b")  # newline added
    assert path.read_text() == 'epoch,loss,note\n1,0.5,"a, quoted"\n2,0.25,b\n'
    assert read_csv_rows(path) == [
        {"epoch": "1", "loss": "0.5", "note": "a, quoted"},
        {"epoch": "2", "loss": "0.25", "note": "b"},
    ]


def test_torn_last_line_is_ignored_then_cut_by_the_next_append(tmp_path):
    path = tmp_path / "metrics.csv"
    atomic_append_line(path, "epoch,loss")
    atomic_append_line(path, "1,0.5")
    with open(path, "ab") as fh:  # what a crash in the middle of a write leaves behind
        fh.write(b"2,0.2")
    assert read_csv_rows(path) == [{"epoch": "1", "loss": "0.5"}]
    atomic_append_line(path, "2,0.25")
    assert path.read_text() == "epoch,loss\n1,0.5\n2,0.25\n"
    assert read_csv_rows(path) == [{"epoch": "1", "loss": "0.5"}, {"epoch": "2", "loss": "0.25"}]


def test_torn_header_only_and_missing_file_read_as_empty(tmp_path):
    path = tmp_path / "metrics.csv"
    assert read_csv_rows(path) == []
    path.write_bytes(b"epoch,lo")
    assert read_csv_rows(path) == []
    atomic_append_line(path, "epoch,loss")
    assert path.read_text() == "epoch,loss\n"


def test_append_refuses_multi_line_input(tmp_path):
    with pytest.raises(ValueError, match="line break"):
        atomic_append_line(tmp_path / "m.csv", "1,2\n3,4")
    with pytest.raises(ValueError, match="line break"):
        csv_row_line(["multi\nline"])


# ------------------------------------------------------------------------------------------------ RNG


def draw() -> tuple:
    return (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), torch.randn(2).tolist())  # noqa: NPY002


def test_rng_round_trip_repeats_the_next_numbers():
    random.seed(1)
    np.random.seed(2)  # noqa: NPY002 - the global generators are what is being captured
    torch.manual_seed(3)
    draw()
    state = capture_rng_state()
    expected = draw()
    draw()  # move on
    restore_rng_state(state)
    assert draw() == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_cuda_state_without_cuda_warns_and_restores_the_cpu_streams():
    state = capture_rng_state()
    assert state["cuda"] is None
    expected = draw()
    state["cuda"] = {"device": 0, "state": torch.zeros(16, dtype=torch.uint8)}
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        restore_rng_state(state)
    assert draw() == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_round_trip():
    torch.cuda.init()
    state = capture_rng_state()
    expected = torch.rand(4, device="cuda").cpu()
    torch.rand(4, device="cuda")
    restore_rng_state(state)
    assert torch.equal(torch.rand(4, device="cuda").cpu(), expected)


def test_restore_rng_rejects_a_foreign_dict():
    with pytest.raises(ValueError, match="missing RNG entries"):
        restore_rng_state({"torch": torch.get_rng_state()})


# ------------------------------------------------------------------------------------------------ checkpoints


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.drop(x))


def make_run(seed: int = 0):
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 3], gamma=0.5)
    return model, opt, sched


def train_steps(model, opt, sched, n: int) -> None:
    """Steps that consume torch, NumPy and Python randomness (data, dropout, a random scale)."""
    model.train()
    for _ in range(n):
        x = torch.randn(8, 4) * float(np.random.uniform(0.5, 1.5)) + random.random()  # noqa: NPY002
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_checkpoint_round_trip_resumes_exactly(tmp_path):
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002
    model, opt, sched = make_run()
    train_steps(model, opt, sched, 2)
    path = save_checkpoint(
        tmp_path / "last.pt",
        model=model,
        optimizers={"main": opt},
        schedulers={"main": sched},
        extra={"kappa": np.float64(12.5), "history": [1, 2]},
        config=CONFIG,
        epoch=2,
    )
    train_steps(model, opt, sched, 3)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    reference_lr = opt.param_groups[0]["lr"]

    model2, opt2, sched2 = make_run(seed=123)  # different init, and the global RNGs have moved on
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 2 and ckpt["extra"] == {"kappa": 12.5, "history": [1, 2]}
    assert ckpt["config"] == CONFIG and ckpt["config_fingerprint"] == config_fingerprint(CONFIG)
    restore_checkpoint(ckpt, model=model2, optimizers={"main": opt2}, schedulers={"main": sched2})
    train_steps(model2, opt2, sched2, 3)
    for key, value in model2.state_dict().items():
        assert torch.equal(value, reference[key]), key
    assert opt2.param_groups[0]["lr"] == reference_lr == pytest.approx(0.05 * 0.25)


def test_restore_names_missing_optimisers(tmp_path):
    model, opt, sched = make_run()
    path = save_checkpoint(tmp_path / "c.pt", model=model, optimizers={"main": opt}, config=CONFIG, epoch=0)
    with pytest.raises(CheckpointError, match=r"missing in checkpoint \['beta'\]"):
        restore_checkpoint(load_checkpoint(path), optimizers={"main": opt, "beta": opt}, restore_rng=False)


def test_unsafe_extra_is_refused_before_writing(tmp_path):
    model, _, _ = make_run()
    with pytest.raises(ValueError, match=r"checkpoint\['extra'\]\['cache'\].*numpy.ndarray"):
        save_checkpoint(tmp_path / "c.pt", model=model, extra={"cache": np.zeros(3)}, config=CONFIG, epoch=1)
    assert not (tmp_path / "c.pt").exists()


def test_truncated_checkpoint_gives_a_clear_error_naming_the_file(tmp_path):
    model, opt, sched = make_run()
    path = save_checkpoint(tmp_path / "last.pt", model=model, optimizers={"main": opt}, config=CONFIG, epoch=1)
    data = path.read_bytes()
    for size in (len(data) // 2, 100, 0):
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=r"last\.pt"):
            load_checkpoint(path)
    path.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(CheckpointError, match=r"corrupt or truncated"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_foreign_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="not a smartmine checkpoint"):
        load_checkpoint(path)
    torch.save({"format": "smartmine-checkpoint", "format_version": 99}, path)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path)


# ------------------------------------------------------------------------------------------------ config checks


def test_config_mismatch_names_the_key(tmp_path):
    model, _, _ = make_run()
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "c.pt", model=model, config=CONFIG, epoch=1))
    changed = {**CONFIG, "optim": {"lr": 0.02, "optimizer": "adam"}}
    with pytest.raises(ConfigMismatchError, match=r"optim\.lr: checkpoint 0\.01, now 0\.02") as info:
        check_compatible(ckpt, changed)
    assert info.value.differences == {"optim.lr": (0.01, 0.02)}
    assert "c.pt" in str(info.value)


def test_resume_keys_are_ignored_and_new_keys_reported(tmp_path):
    model, _, _ = make_run()
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "c.pt", model=model, config=CONFIG, epoch=1))
    longer = {**CONFIG, "run_dir": "elsewhere", "train": {"epochs": 10}}
    check_compatible(ckpt, longer)  # epochs and run_dir may change on resume
    with pytest.raises(ConfigMismatchError, match="train.epochs"):
        check_compatible(ckpt, longer, ignore=("run_dir",))
    check_compatible(ckpt, longer, ignore=("run_dir", "train.*"))
    added = {**CONFIG, "loss": {"margin": 0.2}}
    with pytest.raises(ConfigMismatchError, match=r"loss\.margin: checkpoint \(absent\), now 0\.2"):
        check_compatible(ckpt, added)


def test_keys_added_after_a_run_started_resume_when_they_keep_the_old_behaviour(tmp_path):
    from smartmine.training.config import absent_key_values

    model, _, _ = make_run()
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "c.pt", model=model, config=CONFIG, epoch=1))
    newer = {**CONFIG, "data": {"decode_once": False}, "model": {"freeze_bn": False, "head_init": "random"}}
    check_compatible(ckpt, newer, absent_means=absent_key_values())  # what the old run did: no difference
    changed = {**newer, "model": {"freeze_bn": True, "head_init": "random"}}
    with pytest.raises(
        ConfigMismatchError, match=r"model\.freeze_bn: checkpoint \(absent: older runs used False\), now True"
    ) as info:
        check_compatible(ckpt, changed, absent_means=absent_key_values())
    assert info.value.differences == {"model.freeze_bn": (False, True)}
    with pytest.raises(ConfigMismatchError, match=r"data\.decode_once: checkpoint \(absent\)"):
        check_compatible(ckpt, newer)  # without absent_means every new key differs


def test_fingerprint_ignores_key_order_but_not_values():
    a = {"x": 1, "y": {"b": 2, "a": [1, 2]}}
    b = {"y": {"a": [1, 2], "b": 2}, "x": 1}
    assert config_fingerprint(a) == config_fingerprint(b)
    assert config_fingerprint(a) != config_fingerprint({**a, "x": 2})
    assert config_fingerprint(a, ignore=("x",)) == config_fingerprint({**a, "x": 2}, ignore=("x",))


def test_saved_file_is_written_atomically(tmp_path, monkeypatch):
    # A failing save leaves the previous checkpoint loadable.
    model, opt, _ = make_run()
    path = save_checkpoint(tmp_path / "last.pt", model=model, optimizers={"main": opt}, config=CONFIG, epoch=1)
    monkeypatch.setattr(atomic.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        save_checkpoint(path, model=model, optimizers={"main": opt}, config=CONFIG, epoch=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert leftovers(tmp_path) == []
    assert os.listdir(tmp_path) == ["last.pt"]


def test_dataparallel_wrapper_is_unwrapped(tmp_path):
    model, _, _ = make_run()
    path = save_checkpoint(tmp_path / "c.pt", model=nn.DataParallel(model), config=CONFIG, epoch=1)
    ckpt = load_checkpoint(path)
    assert set(ckpt["model"]) == {"lin.weight", "lin.bias"}
    fresh, _, _ = make_run(seed=9)
    restore_checkpoint(ckpt, model=nn.DataParallel(fresh), restore_rng=False)
    assert torch.equal(fresh.lin.weight, model.lin.weight)


WRITER = """
import sys
import torch
from smartmine.training.checkpoint import atomic_append_line, save_checkpoint
path, csv_path = sys.argv[1], sys.argv[2]
model = torch.nn.Linear(64, 64)
atomic_append_line(csv_path, "epoch,value,check")
i = 0
while True:
    with torch.no_grad():
        model.weight.fill_(float(i))
    save_checkpoint(path, model=model, extra={"i": i}, config={"seed": 0}, epoch=i)
    atomic_append_line(csv_path, f"{i},{'x' * (i % 50)},{i * 7}")
    if i == 0:
        print("ready", flush=True)
    i += 1
"""


def test_sigkill_during_writes_leaves_a_loadable_checkpoint_and_whole_rows(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    for delay in (0.1,):
        path, csv_path = tmp_path / f"last{delay}.pt", tmp_path / f"metrics{delay}.csv"
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(csv_path)], stdout=subprocess.PIPE)
        try:
            assert proc.stdout.readline().strip() == b"ready"
            time.sleep(delay)  # let it get somewhere in the middle of some write
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        ckpt = load_checkpoint(path)
        i = ckpt["extra"]["i"]
        assert ckpt["epoch"] == i and torch.all(ckpt["model"]["weight"] == float(i))
        rows = read_csv_rows(csv_path)
        assert len(rows) >= i  # the row of epoch i may not be appended yet
        for row in rows:
            assert int(row["check"]) == 7 * int(row["epoch"]) and row["value"] == "x" * (int(row["epoch"]) % 50)
