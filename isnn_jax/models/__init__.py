"""Flax linen classifiers and the one function that builds them from a config.

Imports nothing of isnn_jax: a model knows nothing of licences, data or training.
"""

from __future__ import annotations

from typing import Any, Mapping

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from isnn_jax.models.cnn import SmallCNN
from isnn_jax.models.imported import ModelImportError, build_imported, is_import_path
from isnn_jax.models.mlp import MLP
from isnn_jax.models.resnet import ResNet18
from isnn_jax.models.stateful import StatefulModel

__all__ = ["MODELS", "ModelImportError", "StatefulModel", "build_model", "model_fields",
           "resolve_conv"]
MODELS = {"small_cnn": SmallCNN, "resnet18": ResNet18, "mlp": MLP}
# Compute dtypes (config.model.dtype); parameters and the loss stay float32 under both.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
CONVS = ("auto", "xla", "im2col")


def resolve_conv(conv: str) -> str:
    """`auto` is the convolution that measured fastest (docs/performance.md): XLA's, on every
    backend and model once the CPU programs compile without YNNPACK fusions; `im2col` stays
    selectable (same parameters)."""
    if conv not in CONVS:
        raise ValueError(f"unknown model conv {conv!r}; choose one of {', '.join(CONVS)} "
                         "(config.model.conv)")
    return "xla" if conv == "auto" else conv


# Config fields each model reads; the config holds the union, so a field another model reads is
# not an error (config.model.features means nothing to resnet18).
def model_fields(name: str) -> tuple[str, ...]:
    """The constructor fields of model `name` that a config may set."""
    skip = {"num_classes", "parent", "name"}
    return tuple(f.name for f in dataclasses.fields(MODELS[name]) if f.name not in skip)


def build_model(model_config: Mapping[str, Any], num_classes: int) -> nn.Module | StatefulModel:
    """The module named by `model_config["name"]`: a built-in one from the config fields it
    declares, or a user's factory (`package.module:factory`) from `model_config["kwargs"]`."""
    fields = dict(model_config)
    name = fields.pop("name")
    if is_import_path(name):
        return build_imported(name, fields.get("kwargs") or {}, num_classes,
                              str(fields.get("train_flag", "auto")))
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}, or name "
                         "your own as package.module:FACTORY (docs/own_model.md)")
    known = set(model_fields(name))
    if "dtype" in fields:
        if fields["dtype"] not in DTYPES:
            raise ValueError(f"unknown model dtype {fields['dtype']!r}; choose one of "
                             f"{', '.join(DTYPES)} (config.model.dtype)")
        fields["dtype"] = DTYPES[fields["dtype"]]
    if "conv" in fields:
        fields["conv"] = resolve_conv(fields["conv"])
    # Lists (from JSON metadata) become tuples: modules must be hashable to be static jit args.
    return MODELS[name](num_classes=num_classes, **{k: tuple(v) if isinstance(v, list) else v
                                                    for k, v in fields.items() if k in known})
