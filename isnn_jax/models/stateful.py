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
import jax.numpy as jnp

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

    def batch_statistics(self, params: Any, state: dict[str, Any], images: jax.Array,
                         rng: jax.Array) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the statistics of `images` themselves, the moving averages after seeing them).

        For BatchNorm-like state (every leaf an exponential moving average `m * old + (1 - m)
        * batch`), two training-mode passes from averages of 0 and of 1 give `(1 - m) * batch`
        and `m + (1 - m) * batch`, hence `m` and the batch's statistics, whatever the module's
        momentum. The statistics stay differentiable in `params` (as in training-mode
        BatchNorm, whose gradient flows through them); the moving averages do not."""
        flags = self._switch(True)

        def after(start: float) -> dict[str, Any]:
            primed = jax.tree.map(lambda leaf: jnp.full_like(leaf, start), state)
            _, updated = self.module.apply({PARAMS: params, **primed}, images,
                                           rngs={"dropout": rng}, mutable=list(state), **flags)
            return dict(updated)

        from_zero = after(0.0)
        fixed = jax.lax.stop_gradient(from_zero)
        momentum = jax.tree.map(lambda one, zero: one - zero,
                                jax.lax.stop_gradient(after(1.0)), fixed)
        batch = jax.tree.map(lambda zero, m: zero / jnp.maximum(1.0 - m, 1e-12), from_zero,
                             momentum)
        averages = jax.tree.map(lambda zero, m, old: zero + m * old, fixed, momentum, state)
        return batch, averages

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
