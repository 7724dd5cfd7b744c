"""Flax linen classifiers and the one function that builds them from a config."""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn

from isnn_jax.models.cnn import SmallCNN
from isnn_jax.models.resnet import ResNet18

MODELS = {"small_cnn": SmallCNN, "resnet18": ResNet18}


def build_model(model_config: Mapping[str, Any], num_classes: int) -> nn.Module:
    """The module named by `model_config["name"]`, its other fields as constructor arguments."""
    fields = dict(model_config)
    name = fields.pop("name")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](num_classes=num_classes, **fields)
