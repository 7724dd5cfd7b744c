"""The thief's training loop: soft-target cross-entropy, jitted in chunks of steps.

Fine-tuning stolen weights, training the same architecture from scratch and training a
distillation student all run through `fit` (Adam, or SGD with momentum). A mask (1.0
trainable, 0.0 frozen per leaf) chooses the layers; frozen leaves get zero gradients and zero
updates, so they stay exactly where they are. `fit_selected` also measures a validation split
of the thief's own data every few steps and returns the best weights seen (model selection
never looks at the test split).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from isnn_jax.attacks.setting import Deadline, on_host

STEPS_PER_CALL = 50  # steps fused into one compiled call; the deadline is checked between calls


OPTIMIZERS = ("adam", "sgd")


def optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """The thief's optimiser: Adam, or SGD with Nesterov momentum 0.9."""
    if name == "adam":
        return optax.adam(learning_rate)
    if name == "sgd":
        return optax.sgd(learning_rate, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimiser {name!r}; choose from {', '.join(OPTIMIZERS)}")


@functools.lru_cache(maxsize=32)
def _chunk_runner(module: nn.Module, batch_size: int, learning_rate: float, steps: int,
                  optimizer_name: str = "adam"):
    tx = optimizer(optimizer_name, learning_rate)

    def loss_fn(params: Any, images: jax.Array, targets: jax.Array) -> jax.Array:
        logits = module.apply({"params": params}, images)
        return optax.softmax_cross_entropy(logits, targets).mean()

    def run(state: tuple[Any, Any], mask: Any, images: jax.Array, targets: jax.Array,
            rng: jax.Array, first_step: jax.Array) -> tuple[tuple[Any, Any], jax.Array]:
        def step(carry: tuple[Any, Any], index: jax.Array) -> tuple[tuple[Any, Any], jax.Array]:
            params, opt_state = carry
            chosen = jax.random.randint(jax.random.fold_in(rng, index), (batch_size,), 0,
                                        images.shape[0])
            loss, grads = jax.value_and_grad(loss_fn)(params, images[chosen], targets[chosen])
            grads = jax.tree_util.tree_map(lambda g, m: g * m, grads, mask)
            updates, opt_state = tx.update(grads, opt_state, params)
            updates = jax.tree_util.tree_map(lambda u, m: u * m, updates, mask)
            return (optax.apply_updates(params, updates), opt_state), loss

        return jax.lax.scan(step, state, first_step + jnp.arange(steps))

    return jax.jit(run), tx


def layer_mask(params: Any, trainable: set[str] | None) -> Any:
    """1.0 for leaves under the named top-level modules (all when `trainable` is None), else 0.0."""
    return {name: jax.tree_util.tree_map(
        lambda leaf: jnp.float32(1.0 if trainable is None or name in trainable else 0.0), sub)
        for name, sub in params.items()}


def last_layer_name(params: Any, num_classes: int) -> str:
    """The top-level module whose kernel maps to `num_classes` outputs (the classifier head)."""
    heads = [name for name, sub in params.items()
             if isinstance(sub, dict) and "kernel" in sub and sub["kernel"].shape[-1] == num_classes]
    if not heads:
        raise ValueError(f"no layer with {num_classes} outputs in {sorted(params)}; "
                         "cannot tell which layer is the classifier head")
    return sorted(heads, key=lambda n: (len(n), n))[-1]


def fit(module: nn.Module, params: Any, images: np.ndarray, targets: np.ndarray, *, steps: int,
        batch_size: int, learning_rate: float, seed: int, mask: Any = None,
        deadline: Deadline | None = None) -> tuple[Any, int]:
    """Train on (images, soft targets (N, classes)); returns (params, steps actually run)."""
    mask = layer_mask(params, None) if mask is None else mask
    tx = _chunk_runner(module, int(batch_size), float(learning_rate), 1)[1]
    state = (params, tx.init(params))
    images, targets = jnp.asarray(images, jnp.float32), jnp.asarray(targets, jnp.float32)
    rng = jax.random.key(seed)
    done = 0
    while done < steps:
        if done and deadline is not None and deadline.expired():
            break
        chunk = min(STEPS_PER_CALL, steps - done)  # at most two compiled chunk lengths
        run = _chunk_runner(module, int(batch_size), float(learning_rate), chunk)[0]
        state, _ = run(state, mask, images, targets, rng, jnp.int32(done))
        done += chunk
    return on_host(state[0]), done


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer labels as one-hot float targets."""
    return np.eye(num_classes, dtype=np.float32)[labels]


def fit_selected(module: nn.Module, params: Any, images: np.ndarray, targets: np.ndarray,
                 validate: Any, *, steps: int, batch_size: int, learning_rate: float,
                 optimizer_name: str, seed: int, evaluate_every: int, mask: Any = None,
                 deadline: Deadline | None = None) -> tuple[Any, dict[str, Any]]:
    """Train like `fit`, measuring `validate(params) -> accuracy` at step 0 and every
    `evaluate_every` steps; returns the weights with the best validation accuracy (the
    earliest on ties) and the record: the curve [(step, accuracy)], the best step and its
    accuracy, and the steps run."""
    mask = layer_mask(params, None) if mask is None else mask
    tx = _chunk_runner(module, int(batch_size), float(learning_rate), 1, optimizer_name)[1]
    state = (params, tx.init(params))
    images, targets = jnp.asarray(images, jnp.float32), jnp.asarray(targets, jnp.float32)
    rng = jax.random.key(seed)
    curve = [(0, float(validate(params)))]
    best_params, (best_step, best_accuracy) = params, curve[0]
    done = 0
    every = max(1, int(evaluate_every))
    while done < steps:
        if done and deadline is not None and deadline.expired():
            break
        chunk = min(every, steps - done)
        run = _chunk_runner(module, int(batch_size), float(learning_rate), chunk,
                            optimizer_name)[0]
        state, _ = run(state, mask, images, targets, rng, jnp.int32(done))
        done += chunk
        accuracy = float(validate(state[0]))
        curve.append((done, accuracy))
        if accuracy > best_accuracy:
            best_params, best_step, best_accuracy = state[0], done, accuracy
    return on_host(best_params), {"curve": curve, "best_step": best_step,
                                  "best_validation": best_accuracy, "steps": done}
