"""Embedder: head + L2 normalisation, parameter groups and learning rates, frozen batch norm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from smartmine.models.embedder import Embedder, build_embedder


def small_embedder(dim: int = 8, **kw) -> Embedder:
    torch.manual_seed(0)
    return build_embedder("small_cnn", embedding_dim=dim, in_channels=1, widths=(4, 8), **kw)


def batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_output_shape_unit_norm_and_numpy_rederivation():
    model = small_embedder(dim=6).eval()
    x = torch.randn(5, 1, 16, 16)
    with torch.no_grad():
        out = model(x).numpy()
        feats = model.backbone(x).numpy()
    assert out.shape == (5, 6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    w = model.head.weight.detach().numpy()
    b = model.head.bias.detach().numpy()
    z = feats @ w.T + b
    np.testing.assert_allclose(out, z / np.linalg.norm(z, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_normalize_false_returns_the_raw_head_output():
    model = small_embedder(dim=6, normalize=False).eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        out = model(x)
        expected = model.head(model.features(x))
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out.norm(dim=1), torch.ones(3))


def test_bad_dimensions_are_rejected():
    with pytest.raises(ValueError, match="embedding_dim"):
        Embedder(nn.Identity(), feature_dim=4, embedding_dim=0)
    with pytest.raises(ValueError, match="feature_dim"):
        Embedder(nn.Identity(), feature_dim=2.5, embedding_dim=3)


def test_input_spec_comes_from_the_backbone():
    model = small_embedder()
    assert model.input_spec.channels == 1 and model.input_spec.size == 32
    assert Embedder(nn.Identity(), 3, 2).input_spec is None


def test_parameter_groups_split_backbone_and_head():
    model = small_embedder()
    groups = model.parameter_groups(lr=0.01, head_lr_mult=10.0, weight_decay=1e-4)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"backbone", "head"}
    assert {id(p) for p in by_name["backbone"]["params"]} == {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in by_name["head"]["params"]} == {id(p) for p in model.head.parameters()}
    assert by_name["backbone"]["lr"] == pytest.approx(0.01)
    assert by_name["head"]["lr"] == pytest.approx(0.1)
    assert all(g["weight_decay"] == pytest.approx(1e-4) for g in groups)
    with pytest.raises(ValueError, match="head_lr_mult"):
        model.parameter_groups(lr=0.01, head_lr_mult=-1)


def test_sgd_step_uses_each_group_learning_rate():
    # With a gradient of exactly 1 everywhere, plain SGD moves each parameter by -lr of its group.
    model = small_embedder()
    opt = torch.optim.SGD(model.parameter_groups(lr=0.01, head_lr_mult=10.0), lr=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    for name, p in model.named_parameters():
        step = 0.1 if name.startswith("head.") else 0.01
        torch.testing.assert_close(p.detach(), before[name] - step)


def test_batchnorm_moves_when_not_frozen():
    # Control for the frozen test below: in train mode a forward pass does update running statistics.
    model = small_embedder().train()
    bn = batchnorms(model)[0]
    mean0 = bn.running_mean.clone()
    model(torch.randn(4, 1, 16, 16) + 3.0)
    assert not torch.equal(bn.running_mean, mean0)


def test_frozen_batchnorm_stays_frozen_across_train_calls():
    model = small_embedder(freeze_bn=True)
    assert model.batchnorm_frozen
    model.train()
    assert model.training and model.head.training
    for bn in batchnorms(model):
        assert not bn.training
        assert not bn.weight.requires_grad and not bn.bias.requires_grad
    stats = [(bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)) for bn in batchnorms(model)]
    out = model(torch.randn(4, 1, 16, 16) * 5 + 3.0)
    out.sum().backward()
    for bn, (mean, var, count) in zip(batchnorms(model), stats, strict=True):
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
        assert int(bn.num_batches_tracked) == count
        assert bn.weight.grad is None
    # Frozen BN parameters are left out of the optimiser groups; the convolutions stay in.
    groups = model.parameter_groups(lr=0.1)
    grouped = {id(p) for g in groups for p in g["params"]}
    frozen = {id(p) for bn in batchnorms(model) for p in bn.parameters()}
    assert not grouped & frozen
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}
    # eval() and back keeps it frozen too.
    model.eval().train()
    assert all(not bn.training for bn in batchnorms(model))


def test_freeze_batchnorm_on_a_timm_backbone():
    # timm's BatchNormAct2d subclasses BatchNorm2d, so freezing reaches it as well.
    model = build_embedder("efficientnet_lite0", embedding_dim=4, freeze_bn=True).train()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) > 40
    assert all(not m.training and not m.weight.requires_grad for m in bns)
