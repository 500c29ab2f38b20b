"""The CLI's epoch line: what a mined epoch shows, and that warm-up epochs show no κ."""

from __future__ import annotations

from smartmine.training.epoch_stats import summary


def test_mined_epoch_line_shows_the_controller_view():
    row = {"epoch": 3, "loss": 0.1, "train_error": 0.523, "target_error": 0.5, "kappa": 1.4, "t_q10": 1.07,
           "t_q50": 1.47, "t_q90": 2.89, "mined_triplets": 2000, "mined_planned": 2040, "list_recall": 0.994,
           "recall@1": 0.9, "epoch_seconds": 4.2, "mined_fraction": 0.5}  # fmt: skip
    assert summary(row) == (
        "epoch 3 | loss 0.1000 | err 0.523/0.50 | κ 1.4 (t_a 1.07/1.47/2.89) | mined 2000/2040 (50% of triplets) | "
        "lists 0.99 | recall@1 0.9000 | 4.2s"
    )
    # with the index that built the lists (what `mining.index: auto` chose)
    assert "| lists 0.99 (exact) |" in summary({**row, "index": "exact"})


def test_warmup_and_in_batch_lines_have_no_mining_fields():
    warmup = {"epoch": 1, "loss": 0.2, "train_error": 0.32, "kappa": None, "mined_triplets": 0, "mined_planned": 0,
              "t_q10": None, "list_recall": None, "epoch_seconds": 5.0}  # fmt: skip
    assert summary(warmup) == "epoch 1 | loss 0.2000 | err 0.320 | 5.0s"
    in_batch = {"epoch": 2, "loss": 0.3, "train_error": None, "epoch_seconds": 1.0}
    assert summary(in_batch) == "epoch 2 | loss 0.3000 | 1.0s"


def test_shrunk_plan_shows_its_share():
    row = {"epoch": 5, "loss": 0.1, "kappa": 2.5, "mined_triplets": 510, "mined_planned": 510,
           "mined_fraction": 0.125, "epoch_seconds": 3.0}  # fmt: skip
    assert summary(row) == "epoch 5 | loss 0.1000 | κ 2.5 | mined 510/510 (12% of triplets) | 3.0s"
