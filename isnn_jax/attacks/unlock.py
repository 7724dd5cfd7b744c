"""Unlock by optimisation (white box): learn one universal input perturbation from clean data.

The thief has the weights and some clean labelled images, and learns a single additive
perturbation `u` (bounded in L-inf by the licence's epsilon, or unbounded) that makes
clip(x + u) classify correctly. If one exists within reach, the thief has made a licence.
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
from isnn_jax.attacks.measure import pattern_accuracies
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset, train_subset

STEPS_PER_CALL = 50


@functools.lru_cache(maxsize=8)
def _runner(module: nn.Module, batch_size: int, learning_rate: float, steps: int):
    tx = optax.adam(learning_rate)

    def loss_fn(perturbation: jax.Array, params: Any, images: jax.Array,
                labels: jax.Array) -> jax.Array:
        logits = module.apply({"params": params}, jnp.clip(images + perturbation, 0.0, 1.0))
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def run(state: tuple[jax.Array, Any], params: Any, images: jax.Array, labels: jax.Array,
            bound: jax.Array, rng: jax.Array, first_step: jax.Array):
        def step(carry, index):
            perturbation, opt_state = carry
            chosen = jax.random.randint(jax.random.fold_in(rng, index), (batch_size,), 0,
                                        images.shape[0])
            loss, grad = jax.value_and_grad(loss_fn)(perturbation, params, images[chosen],
                                                     labels[chosen])
            updates, opt_state = tx.update(grad, opt_state, perturbation)
            perturbation = jnp.clip(optax.apply_updates(perturbation, updates), -bound, bound)
            return (perturbation, opt_state), loss

        return jax.lax.scan(step, state, first_step + jnp.arange(steps))

    return compilation.jit(run), tx


def universal_perturbation(module: nn.Module, params: Any, images: np.ndarray, labels: np.ndarray,
                           *, bound: float, steps: int, batch_size: int, learning_rate: float,
                           seed: int, init: np.ndarray | None = None,
                           deadline: Deadline | None = None) -> tuple[np.ndarray, int]:
    """Adam on cross-entropy over clip(x + u), projected to |u| <= bound; returns (u, steps run)."""
    shape = images.shape[1:]
    perturbation = jnp.zeros(shape, jnp.float32) if init is None else jnp.asarray(init, jnp.float32)
    tx = _runner(module, int(batch_size), float(learning_rate), 1)[1]
    state = (perturbation, tx.init(perturbation))
    images_j, labels_j = jnp.asarray(images), jnp.asarray(labels)
    rng, done = jax.random.key(seed), 0
    while done < steps:
        if done and deadline is not None and deadline.expired():
            break
        chunk = min(STEPS_PER_CALL, steps - done)
        run = _runner(module, int(batch_size), float(learning_rate), chunk)[0]
        state, _ = run(state, params, images_j, labels_j, jnp.float32(bound), rng, jnp.int32(done))
        done += chunk
    return np.asarray(state[0]), done


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays taken as flat vectors."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else 0.0


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Learn a perturbation per (data fraction, bound); report clean-test accuracy under it."""
    images, labels = eval_subset(setting, eval_images)
    target, epsilon = setting.protected, float(setting.spec.epsilon)
    true = np.asarray(setting.true_pattern()) if setting.spec.kind == "additive" else None
    rows, stopped = [], False
    for index, fraction in enumerate(budget.fractions):
        train_x, train_y = train_subset(setting, float(fraction), setting.seed + 100 + index)
        for bound_name in budget.bounds:
            if rows and deadline.expired():
                stopped = True
                break
            bound = epsilon if bound_name == "epsilon" else 1.0
            rate = float(budget.learning_rate) * (epsilon / 0.1 if bound_name == "epsilon" else 1.0)
            # Restarts from other seeds; the thief keeps the one best on its own data.
            tries = []
            for restart in range(int(budget.restarts)):
                if tries and deadline.expired():
                    break
                learned, steps_run = universal_perturbation(
                    target.module, target.params, train_x, train_y, bound=bound,
                    steps=int(budget.steps), batch_size=int(budget.batch_size), learning_rate=rate,
                    seed=setting.seed + index + 1000 * restart, deadline=deadline)
                train_acc = pattern_accuracies(target, target.params, learned[None], train_x,
                                               train_y)[0]
                tries.append((float(train_acc), learned, steps_run))
            train_acc, learned, steps_run = max(tries, key=lambda t: t[0])
            candidates = np.stack([learned, epsilon * np.sign(learned)])
            test_acc, sign_acc = pattern_accuracies(target, target.params, candidates, images, labels)
            row = {"fraction": float(fraction), "train_images": int(train_x.shape[0]),
                   "bound": bound_name, "linf": float(np.abs(learned).max()), "steps": steps_run,
                   "restarts_train_accuracy": [t[0] for t in tries],
                   "accuracy": float(test_acc), "train_accuracy": train_acc,
                   "sign_times_epsilon_accuracy": float(sign_acc)}
            if true is not None:
                row["cosine_with_true_pattern"] = cosine(learned, true)
            rows.append(row)
        if stopped:
            break
    best = max((row["accuracy"] for row in rows), default=float("nan"))
    return {"rows": rows, "stopped_early": stopped, "eval_images": int(images.shape[0]),
            "steps": int(budget.steps), "batch_size": int(budget.batch_size),
            "restarts": int(budget.restarts), "max_accuracy": best}
