"""A user's module with more than parameters (BatchNorm statistics) or a training switch
(dropout), presented to the rest of isnn_jax as a classifier like the built-in ones.

Everywhere outside the train step a model is used as `model.apply({"params": P}, images)` for
inference and `model.init(rng, images)["params"]` for fresh weights. For a `StatefulModel`, P is
the module's whole variable dict ({"params": ..., "batch_stats": ...}): inference runs the module
in evaluation mode (running statistics, no dropout), and checkpoints, exports and attacks carry
the statistics with the weights. Only the train step looks inside, through `split`, `merge` and
`train_apply`: gradients and the optimiser see the "params" collection alone, and the other
collections are updated by the module's own training-mode call.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import flax.linen as nn
import jax

TRAIN_FLAGS = ("train", "deterministic", "training", "none")
PARAMS = "params"


def detect_train_flag(module: nn.Module) -> str:
    """The name of the call argument that switches training behaviour, or "none"."""
    try:
        parameters = inspect.signature(type(module).__call__).parameters
    except (TypeError, ValueError):
        return "none"
    for name in ("train", "deterministic", "training"):
        if name in parameters:
            return name
    return "none"


@dataclasses.dataclass(frozen=True)
class StatefulModel:
    """`module` with its training switch `train_flag` (train | deterministic | training | none)."""

    module: nn.Module
    train_flag: str = "none"

    def __post_init__(self) -> None:
        if self.train_flag not in TRAIN_FLAGS:
            raise ValueError(f"unknown train flag {self.train_flag!r}; choose one of "
                             f"{', '.join(('auto',) + TRAIN_FLAGS)} (config.model.train_flag)")

    def _switch(self, train: bool) -> dict[str, bool]:
        if self.train_flag == "none":
            return {}
        if self.train_flag == "deterministic":
            return {"deterministic": not train}
        return {self.train_flag: train}

    def init(self, rng: jax.Array, images: jax.Array) -> dict[str, Any]:
        """{"params": every variable of the module}, initialised in evaluation mode."""
        rngs = {PARAMS: rng, "dropout": jax.random.fold_in(rng, 1)}
        variables = self.module.init(rngs, images, **self._switch(False))
        return {PARAMS: dict(variables)}

    def apply(self, variables: dict[str, Any], images: jax.Array) -> jax.Array:
        """Inference logits (running statistics, no dropout); `variables` as `init` returns."""
        return self.module.apply(variables[PARAMS], images, **self._switch(False))

    @staticmethod
    def split(variables: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """(the trainable "params" collection, every other collection)."""
        return variables[PARAMS], {k: v for k, v in variables.items() if k != PARAMS}

    @staticmethod
    def merge(params: Any, state: dict[str, Any]) -> dict[str, Any]:
        """The variable dict of trainable `params` and the other collections `state`."""
        return {PARAMS: params, **state}

    def eval_apply(self, params: Any, state: dict[str, Any], images: jax.Array) -> jax.Array:
        """Inference logits from the split variables (differentiable in `params`)."""
        return self.module.apply({PARAMS: params, **state}, images, **self._switch(False))

    def train_apply(self, params: Any, state: dict[str, Any], images: jax.Array,
                    rng: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
        """Training-mode logits (batch statistics, dropout from `rng`) and the updated state."""
        variables = {PARAMS: params, **state}
        if not state:
            return self.module.apply(variables, images, rngs={"dropout": rng},
                                     **self._switch(True)), state
        logits, updated = self.module.apply(variables, images, rngs={"dropout": rng},
                                            mutable=list(state), **self._switch(True))
        return logits, {**state, **dict(updated)}
