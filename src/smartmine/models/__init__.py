"""Backbones (a name registry) and the embedding network (backbone → linear head → L2 normalisation)."""

from smartmine.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputSpec,
    PretrainedWeightsUnavailable,
    available_backbones,
    build_backbone,
    register_backbone,
)
from smartmine.models.efficientnet_lite import load_state_dict_positionally, packaged_weights_path
from smartmine.models.embedder import Embedder, build_embedder
from smartmine.models.head_init import PcaHead, init_head_from_pca_, pca_head
from smartmine.models.small_cnn import SmallCNN

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Embedder",
    "InputSpec",
    "PcaHead",
    "PretrainedWeightsUnavailable",
    "SmallCNN",
    "available_backbones",
    "build_backbone",
    "build_embedder",
    "init_head_from_pca_",
    "load_state_dict_positionally",
    "packaged_weights_path",
    "pca_head",
    "register_backbone",
]
