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

from isnn_jax.base import compilation
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

    return compilation.jit(run), tx


def _keys(path: tuple) -> tuple[str, ...]:
    return tuple(str(getattr(part, "key", part)) for part in path)


def _other_collection(params: Any, keys: tuple[str, ...]) -> bool:
    """Whether a leaf lies outside the `params` collection of a stateful model's variables
    (BatchNorm's running statistics): gradient steps on those are not training, so a thief's
    fine-tuning keeps them as stolen (and from scratch, as initialised)."""
    return isinstance(params, dict) and "params" in params and len(params) > 1 and \
        keys[0] != "params"


def layer_mask(params: Any, trainable: set[tuple[str, ...]] | None) -> Any:
    """1.0 for leaves under one of the `trainable` module paths (every parameter when None),
    else 0.0; a stateful model's other collections are always 0.0."""
    def of(path: tuple, leaf: Any) -> jax.Array:
        keys = _keys(path)
        on = not _other_collection(params, keys) and (
            trainable is None or any(keys[:len(prefix)] == prefix for prefix in trainable))
        return jnp.float32(1.0 if on else 0.0)

    return jax.tree_util.tree_map_with_path(of, params)


def head_path(params: Any, num_classes: int) -> tuple[str, ...]:
    """The path of the module whose kernel maps to `num_classes` outputs (the classifier head),
    at any depth (a user's model may nest it); of several, the last by name."""
    heads = [_keys(path)[:-1] for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
             if _keys(path)[-1] == "kernel" and leaf.shape[-1] == num_classes
             and not _other_collection(params, _keys(path))]
    if not heads:
        kernels = ["/".join(_keys(path)) for path, _ in
                   jax.tree_util.tree_flatten_with_path(params)[0] if _keys(path)[-1] == "kernel"]
        raise ValueError(f"no kernel with {num_classes} outputs among {kernels}; cannot tell "
                         "which layer is the classifier head")
    return max(heads, key=lambda keys: tuple((len(key), key) for key in keys))


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
