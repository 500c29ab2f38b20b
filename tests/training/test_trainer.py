"""End-to-end trainer tests on tiny glyph runs: resume exactness, distributed training, CLI commands, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from smartmine.run_folder import read_metrics_csv
from smartmine.training.checkpoint import load_checkpoint
from smartmine.training.config import config_from_dict
from smartmine.training.trainer import Trainer, TrainingError

TINY = {
    "seed": 3,
    "data": {"name": "glyphs", "options": {"variants_per_face": 1}},
    "model": {"backbone": "small_cnn", "embedding_dim": 16, "options": {"widths": [8, 16, 32]}},
    "mining": {"strategy": "smart", "index": "exact", "warmup_epochs": 1, "triplets_per_epoch": 192,
               "triplets_per_batch": 48},
    "train": {"epochs": 3, "eval_every": 1, "progress": False},
    "eval": {"compute_nmi": False},
}


def tiny(tmp_path: Path, name: str = "run", **sections) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    raw["run_dir"] = str(tmp_path / name)
    return raw


def write_config(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / f"{Path(raw['run_dir']).name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "smartmine.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def metric_rows(run_dir: Path) -> list[dict]:
    # Wall-clock columns differ between runs; everything else must be identical.
    timing = ("seconds", "images_per_second")
    return [{k: v for k, v in row.items() if not any(t in k for t in timing)}
            for row in read_metrics_csv(run_dir / "metrics.csv")]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """One uninterrupted tiny run (CLI, like a user), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = write_config(tmp, tiny(tmp, "ref"))
    proc = run_cli("train", str(cfg))
    assert proc.returncode == 0, proc.stderr
    return tmp / "ref"


def test_run_folder_contents(reference_run: Path) -> None:
    rows = read_metrics_csv(reference_run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    # warm-up epoch: random triplets only; afterwards the smart miner reports κ and its counts
    assert rows[0]["mined_triplets"] == 0 and rows[0]["random_triplets"] == 192
    # which index built the lists: none in warm-up (empty cell), then the configured one
    assert "index" not in rows[0] and rows[1]["index"] == rows[2]["index"] == "exact"
    # auto κ₀ with the cautious start: the plan at its floor (a quarter of mined_fraction 0.5), at a κ above the cap of
    # the whole plan (easier triplets), unless κ's floor of 1 binds
    assert rows[1]["mined_fraction"] == 0.125
    assert rows[1]["kappa"] > rows[1]["kappa_cap"] or rows[1]["kappa"] == 1.0
    assert rows[1]["mined_triplets"] >= 0.8 * rows[1]["mined_planned"] > 0
    assert rows[1]["mined_triplets"] + rows[1]["random_triplets"] == 192
    for row in rows:
        # error_counts=mined (the default) counts only mined triplets, so a warm-up epoch has no training error.
        assert ("train_error" in row) == (row["mined_triplets"] > 0)
        assert 0.0 <= row.get("train_error", 0.0) <= 1.0
        assert 0.0 <= row["recall@1"] <= 1.0 and "map@r" in row
    ckpt = load_checkpoint(reference_run / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 3 and len(ckpt["extra"]["history"]) == 3
    assert (reference_run / "config.yaml").exists() and (reference_run / "results.md").exists()
    assert (reference_run / "report.html").exists()  # built at the end of `smartmine train`
    assert sorted(p.name for p in (reference_run / "mined").iterdir()) == ["epoch_002.json", "epoch_003.json"]


def test_killed_after_first_checkpoint_then_resumed_matches_uninterrupted(reference_run: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, tiny(tmp_path, "killed"))
    proc = run_cli("train", str(cfg), "--no-report", env={"SMARTMINE_FAULT": "after_checkpoint:1"})
    assert proc.returncode == -signal.SIGKILL
    assert len(read_metrics_csv(tmp_path / "killed" / "metrics.csv")) <= 1
    resumed = run_cli("train", str(cfg), "--resume", "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    assert metric_rows(tmp_path / "killed") == metric_rows(reference_run)


def test_warm_started_fanng_mining_resumes_exactly(tmp_path: Path) -> None:
    # FANNG warm-starts epoch 3's lists from epoch 2's; killed after epoch 2's checkpoint, the resumed run must
    # rebuild them from the lists saved in the checkpoint and end exactly where the uninterrupted run ends.
    fanng = {"index": "fanng", "index_options": {"knn_k": 16}}
    ref = write_config(tmp_path, tiny(tmp_path, "ref_fanng", mining=fanng))
    assert run_cli("train", str(ref), "--no-report").returncode == 0
    rows = read_metrics_csv(tmp_path / "ref_fanng" / "metrics.csv")
    assert [r.get("warm_start") for r in rows] == [None, 0.0, 1.0] and rows[2]["drift_recall"] > 0.3
    assert [r.get("warm_joined") for r in rows] == [None, None, 1.0]  # metrics.csv says how epoch 3 was warmed
    cfg = write_config(tmp_path, tiny(tmp_path, "killed_fanng", mining=fanng))
    proc = run_cli("train", str(cfg), "--no-report", env={"SMARTMINE_FAULT": "after_checkpoint:2"})
    assert proc.returncode == -signal.SIGKILL
    resumed = run_cli("train", str(cfg), "--resume", "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    assert metric_rows(tmp_path / "killed_fanng") == metric_rows(tmp_path / "ref_fanng")


def test_killed_mid_epoch_then_resumed_matches_uninterrupted(reference_run: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, tiny(tmp_path, "killed2"))
    proc = run_cli("train", str(cfg), "--no-report", env={"SMARTMINE_FAULT": "batch:3:2"})
    assert proc.returncode == -signal.SIGKILL
    assert len(read_metrics_csv(tmp_path / "killed2" / "metrics.csv")) == 2
    resumed = run_cli("train", str(cfg), "--resume", "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    assert metric_rows(tmp_path / "killed2") == metric_rows(reference_run)


def test_same_seed_same_metrics_in_process(reference_run: Path, tmp_path: Path) -> None:
    Trainer(config_from_dict(tiny(tmp_path, "again"))).fit()
    assert metric_rows(tmp_path / "again") == metric_rows(reference_run)


def test_eval_and_embed_commands(reference_run: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "m.json"
    proc = run_cli("eval", str(reference_run), "--out", str(out_json))
    assert proc.returncode == 0, proc.stderr
    evaluated = json.loads(out_json.read_text())
    best = max(read_metrics_csv(reference_run / "metrics.csv"), key=lambda r: r["recall@1"])
    assert evaluated["recall@1"] == pytest.approx(best["recall@1"], abs=1e-6)
    out = tmp_path / "emb.npy"
    proc = run_cli("embed", str(reference_run), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    emb, labels = np.load(out), np.load(tmp_path / "emb.labels.npy")
    assert emb.shape == (len(labels), 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_existing_run_folder_is_not_overwritten(reference_run: Path) -> None:
    before = (reference_run / "metrics.csv").read_bytes()
    proc = run_cli("train", "quickstart", "--run-dir", str(reference_run))
    assert proc.returncode == 2
    assert "already exists" in proc.stderr and "--overwrite" in proc.stderr
    assert (reference_run / "metrics.csv").read_bytes() == before


def test_resume_with_a_different_config_is_refused(reference_run: Path, tmp_path: Path) -> None:
    raw = tiny(tmp_path, "ref")
    raw["run_dir"] = str(reference_run)
    raw["loss"] = {"margin": 0.3}
    with pytest.raises(ValueError, match="loss.margin"):
        Trainer(config_from_dict(raw), resume=True)


def test_in_batch_strategies_train(tmp_path: Path) -> None:
    for strategy, loss in (("distance_weighted", "margin"), ("semihard", "triplet"), ("hard", "contrastive")):
        raw = tiny(tmp_path, strategy, mining={"strategy": strategy, "classes_per_batch": 8},
                   loss={"name": loss, "global_weight": 0.0}, train={"epochs": 1})
        final = Trainer(config_from_dict(raw)).fit()
        assert 0.0 <= final["recall@1"] <= 1.0, strategy
        record = json.loads((tmp_path / strategy / "mined" / "epoch_001.json").read_text())
        assert record["strategy"] == strategy and len(record["triplets"]) == 8


def test_too_many_classes_per_batch_is_refused(tmp_path: Path) -> None:
    raw = tiny(tmp_path, "pk", mining={"strategy": "hard", "classes_per_batch": 500})
    with pytest.raises(TrainingError, match="classes_per_batch=500 exceeds"):
        Trainer(config_from_dict(raw))


def test_k_must_be_below_training_set_size(tmp_path: Path) -> None:
    raw = tiny(tmp_path, "k", mining={"k": 100000})
    with pytest.raises(TrainingError, match="mining.k=100000 must be below"):
        Trainer(config_from_dict(raw))


def test_distributed_two_processes_on_cpu(tmp_path: Path) -> None:
    raw = tiny(tmp_path, "ddp", train={"epochs": 2})
    cfg = write_config(tmp_path, raw)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "smartmine.cli", "train", str(cfg), "--no-report"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_metrics_csv(tmp_path / "ddp" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    # both ranks together trained the whole plan: the training error covers every triplet of the epoch
    assert rows[1]["mined_triplets"] + rows[1]["random_triplets"] == 192
    assert 0.0 <= rows[1]["recall@1"] <= 1.0
    # metrics computed once (rank 0): a single results table
    assert proc.stdout.count("Test metrics on classes never seen in training") == 1


def test_pca_head_init_is_the_pca_of_the_training_features(tmp_path: Path) -> None:
    from sklearn.decomposition import PCA

    messages: list[str] = []
    trainer = Trainer(config_from_dict(tiny(tmp_path, "pca", model={"head_init": "pca"})), log=messages.append)
    model, data = trainer.model, trainer.data
    # the features re-derived by hand: every training image with test-time transforms, the backbone in eval mode
    images = torch.stack([data.train_eval[i][0] for i in range(len(data.train_eval))])
    if data.eval_batch_transform is not None:
        images = data.eval_batch_transform(images)
    model.eval()
    with torch.no_grad():
        features = model.backbone(images).double().numpy()
    ref = PCA(n_components=16).fit(features)
    w = model.head.weight.detach().double().numpy()
    signs = np.sign((w * ref.components_).sum(axis=1))
    np.testing.assert_allclose(w, ref.components_ * signs[:, None], atol=2e-3)
    np.testing.assert_allclose(model.head.bias.detach().numpy(), -(w @ ref.mean_), atol=2e-3)
    assert any(f"of {len(data.train_eval):,} training images" in m for m in messages)


def test_pca_head_run_resumes_exactly(tmp_path: Path) -> None:
    model = {"head_init": "pca", "head_init_images": 100}
    ref = write_config(tmp_path, tiny(tmp_path, "pca_ref", model=model, train={"epochs": 2}))
    assert run_cli("train", str(ref), "--no-report").returncode == 0
    cfg = write_config(tmp_path, tiny(tmp_path, "pca_killed", model=model, train={"epochs": 2}))
    proc = run_cli("train", str(cfg), "--no-report", env={"SMARTMINE_FAULT": "after_checkpoint:1"})
    assert proc.returncode == -signal.SIGKILL
    resumed = run_cli("train", str(cfg), "--resume", "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    assert "head initialised by PCA" not in resumed.stdout  # the head came from the checkpoint
    assert metric_rows(tmp_path / "pca_killed") == metric_rows(tmp_path / "pca_ref")


def test_untrained_baseline_is_the_model_before_training_and_changes_nothing(reference_run: Path, tmp_path: Path):
    raw = tiny(tmp_path, "untrained", eval={"untrained_baseline": True})
    messages: list[str] = []
    Trainer(config_from_dict(raw), log=messages.append).fit()
    run = tmp_path / "untrained"
    # training is exactly the reference run's: the extra evaluation consumes nothing training depends on
    assert metric_rows(run) == metric_rows(reference_run)
    saved = json.loads((run / "untrained.json").read_text())
    assert any(m.startswith("untrained model: recall@1") for m in messages)

    # Recall@1 of a freshly built model re-derived with NumPy: the same seed builds the same untrained model.
    fresh = Trainer(config_from_dict(tiny(tmp_path, "fresh")))
    data = fresh.data
    images = torch.stack([data.test[i][0] for i in range(len(data.test))])
    if data.eval_batch_transform is not None:
        images = data.eval_batch_transform(images)
    fresh.model.eval()
    with torch.no_grad():
        emb = fresh.model(images).double().numpy()
    labels = np.asarray(data.test.labels)
    d2 = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    recall1 = float((labels[d2.argmin(axis=1)] == labels).mean())
    # float32 distances in the library against float64 here: near-ties may flip a point or two
    assert saved["recall@1"] == pytest.approx(recall1, abs=2.5 / len(labels))
    trained = read_metrics_csv(run / "metrics.csv")[-1]["recall@1"]
    assert saved["recall@1"] != trained


def test_untrained_baseline_is_not_rewritten_on_resume(tmp_path: Path) -> None:
    raw = tiny(tmp_path, "untrained_resume", eval={"untrained_baseline": True}, train={"epochs": 2})
    cfg = write_config(tmp_path, raw)
    proc = run_cli("train", str(cfg), "--no-report", env={"SMARTMINE_FAULT": "after_checkpoint:1"})
    assert proc.returncode == -signal.SIGKILL
    path = tmp_path / "untrained_resume" / "untrained.json"
    before = path.read_bytes()
    path.write_text(json.dumps({"recall@1": 0.123}))  # a marker: a re-evaluation would replace it
    resumed = run_cli("train", str(cfg), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(path.read_text()) == {"recall@1": 0.123}
    assert json.loads(before)["recall@1"] > 0
    # the finished run's table sets the model beside the untrained one
    assert "| untrained model | difference |" in resumed.stdout
    assert "untrained model" in (tmp_path / "untrained_resume" / "report.html").read_text()
