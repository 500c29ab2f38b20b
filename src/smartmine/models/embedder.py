"""The embedding network: backbone features → linear head → (optional) L2 normalisation."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from smartmine._validation import check_positive_int
from smartmine.distances import normalize as l2_normalize
from smartmine.models.backbones import InputSpec, build_backbone

_BATCHNORM_TYPES = (nn.modules.batchnorm._BatchNorm,)  # BatchNorm1d/2d/3d, SyncBatchNorm, timm's BatchNormAct2d


class Embedder(nn.Module):
    """``backbone`` (``(B, C, H, W)`` → ``(B, feature_dim)``) followed by ``Linear(feature_dim, embedding_dim)`` and
    L2 normalisation of each row.

    Args:
        backbone: feature extractor returning ``(B, feature_dim)``.
        feature_dim: width of the backbone's output.
        embedding_dim: size of the embedding. Default 64.
        normalize: L2-normalise the embeddings (unit rows). Default ``True``.

    ``forward(x)`` returns ``(B, embedding_dim)``. Attributes: ``backbone``, ``head`` (the linear layer),
    ``input_spec`` (the backbone's :class:`~smartmine.models.backbones.InputSpec`, or ``None``).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, embedding_dim: int = 64, normalize: bool = True) -> None:
        super().__init__()
        self.feature_dim = check_positive_int(feature_dim, "feature_dim")
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim")
        self.backbone = backbone
        self.head = nn.Linear(self.feature_dim, self.embedding_dim)
        self.normalize = bool(normalize)
        self._bn_frozen = False

    @property
    def input_spec(self) -> InputSpec | None:
        return getattr(self.backbone, "input_spec", None)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(B, feature_dim)`` (before the head)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.features(x))
        return l2_normalize(z) if self.normalize else z

    # ------------------------------------------------------------------------------------------- optimisation

    def parameter_groups(
        self, lr: float, head_lr_mult: float = 10.0, weight_decay: float = 0.0
    ) -> list[dict[str, Any]]:
        """Optimiser parameter groups: the backbone at ``lr``, the head at ``lr * head_lr_mult``.

        Smart Mining trains its embedding layer with a ×10 learning rate (the default). Parameters with
        ``requires_grad=False`` (frozen batch norm) are left out, and so is a group that ends up empty. Each group
        carries a ``"name"`` (``"backbone"``/``"head"``) and its ``"lr_mult"``, so schedules and logs can tell them
        apart. Returns a list of dicts ready for ``torch.optim.*(groups)``.
        """
        for value, arg in ((lr, "lr"), (head_lr_mult, "head_lr_mult"), (weight_decay, "weight_decay")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{arg}: expected a non-negative number, got {value!r}")
        groups = []
        for name, module, mult in (("backbone", self.backbone, 1.0), ("head", self.head, float(head_lr_mult))):
            params = [p for p in module.parameters() if p.requires_grad]
            if params:
                groups.append(
                    {
                        "params": params,
                        "lr": float(lr) * mult,
                        "weight_decay": float(weight_decay),
                        "name": name,
                        "lr_mult": mult,
                    }
                )
        return groups

    # ------------------------------------------------------------------------------------------- batch norm

    @property
    def batchnorm_frozen(self) -> bool:
        return self._bn_frozen

    def freeze_batchnorm(self) -> Embedder:
        """Keep every batch-norm layer of the backbone in inference mode with frozen affine parameters.

        Running statistics stop moving and ``weight``/``bias`` get ``requires_grad=False``; this survives later
        ``.train()`` calls. Useful with pretrained backbones and small batches (as in the Smart Mining and
        Sampling Matters fine-tuning). Returns ``self``.
        """
        self._bn_frozen = True
        for m in self._batchnorms():
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
        self._apply_bn_mode()
        return self

    def train(self, mode: bool = True) -> Embedder:
        super().train(mode)
        self._apply_bn_mode()
        return self

    def _batchnorms(self) -> list[nn.Module]:
        return [m for m in self.backbone.modules() if isinstance(m, _BATCHNORM_TYPES)]

    def _apply_bn_mode(self) -> None:
        # ``getattr``: nn.Module.__init__ calls nothing that reaches here, but be safe before __init__ finishes.
        if getattr(self, "_bn_frozen", False):
            for m in self._batchnorms():
                m.eval()


def build_embedder(
    backbone_name: str,
    embedding_dim: int = 64,
    pretrained: bool = False,
    freeze_bn: bool = False,
    normalize: bool = True,
    **backbone_options: Any,
) -> Embedder:
    """Build ``Embedder(build_backbone(backbone_name, pretrained, **backbone_options), embedding_dim)``, with its
    batch norm frozen when ``freeze_bn``. See :mod:`smartmine.models.backbones` for names and options."""
    backbone, feature_dim = build_backbone(backbone_name, pretrained=pretrained, **backbone_options)
    model = Embedder(backbone, feature_dim, embedding_dim=embedding_dim, normalize=normalize)
    if freeze_bn:
        model.freeze_batchnorm()
    return model
