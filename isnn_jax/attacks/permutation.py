"""Unlock a shuffled model by optimising a permutation (white box, shuffle transforms only).

Against a keyed block shuffle an additive perturbation is the wrong shape of key. This thief
knows the public transform parameters (kind, block size, epsilon), has the weights and some
clean labelled images, and learns the in-block permutation itself: a doubly stochastic matrix
S = Sinkhorn(L / temperature) over the m = block_size^2 * channels values of a block (the same
for every block), plus, for `shuffle_additive`, an additive perturbation bounded by epsilon.
The temperature falls during training so S approaches a permutation; the final hard
permutation is the assignment that maximises S (Hungarian algorithm) and is what the thief
would use.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.optimize import linear_sum_assignment

from isnn_jax.base import compilation
from isnn_jax.attacks.measure import accuracy
from isnn_jax.attacks.setting import Deadline, Setting, eval_subset, train_subset
from isnn_jax.protection.transforms import from_blocks, to_blocks, block_permutation, block_shuffle

SINKHORN_ITERATIONS = 20


def sinkhorn(logits: jax.Array, iterations: int = SINKHORN_ITERATIONS) -> jax.Array:
    """A doubly stochastic matrix from `logits` by alternate row and column normalisation."""
    for _ in range(iterations):
        logits = logits - jax.nn.logsumexp(logits, axis=1, keepdims=True)
        logits = logits - jax.nn.logsumexp(logits, axis=0, keepdims=True)
    return jnp.exp(logits)


def soft_shuffle(images: jax.Array, mixing: jax.Array, block_size: int) -> jax.Array:
    """Every block's values mixed by `mixing` (m x m): out[k] = sum_j in[j] mixing[j, k].

    With the permutation matrix mixing[perm[k], k] = 1 this is `block_shuffle(images, perm)`.
    """
    blocks = to_blocks(images, block_size)
    return from_blocks(blocks @ mixing, block_size, images.shape[-1])


def permutation_matrix(permutation: np.ndarray) -> np.ndarray:
    """The m x m matrix with [permutation[k], k] = 1."""
    matrix = np.zeros((permutation.size, permutation.size), np.float32)
    matrix[permutation, np.arange(permutation.size)] = 1.0
    return matrix


def hard_permutation(mixing: np.ndarray) -> np.ndarray:
    """The permutation perm (out[k] = in[perm[k]]) that keeps the most of `mixing`'s mass."""
    rows, cols = linear_sum_assignment(-np.asarray(mixing, np.float64))
    permutation = np.empty(mixing.shape[0], np.int64)
    permutation[cols] = rows
    return permutation


@functools.lru_cache(maxsize=8)
def _runner(module: nn.Module, block_size: int, batch_size: int, learning_rate: float,
            steps: int, total_steps: int, additive: bool):
    tx = optax.adam(learning_rate)

    def temperature(step: jax.Array) -> jax.Array:  # 1 -> 0.03, geometric over the run
        return jnp.exp(jnp.log(0.03) * jnp.minimum(step / max(total_steps - 1, 1), 1.0))

    def transform(variables: dict[str, jax.Array], images: jax.Array, step: jax.Array,
                  epsilon: jax.Array) -> jax.Array:
        mixed = soft_shuffle(images, sinkhorn(variables["logits"] / temperature(step)), block_size)
        if additive:
            mixed = mixed + epsilon * jnp.tanh(variables["pattern"])
        return jnp.clip(mixed, 0.0, 1.0)

    def loss_fn(variables, params, images, labels, step, epsilon):
        logits = module.apply({"params": params}, transform(variables, images, step, epsilon))
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def run(state, params, images, labels, epsilon, rng, first_step):
        def step(carry, index):
            variables, opt_state = carry
            chosen = jax.random.randint(jax.random.fold_in(rng, index), (batch_size,), 0,
                                        images.shape[0])
            loss, grad = jax.value_and_grad(loss_fn)(variables, params, images[chosen],
                                                     labels[chosen], index, epsilon)
            updates, opt_state = tx.update(grad, opt_state, variables)
            return (optax.apply_updates(variables, updates), opt_state), loss

        return jax.lax.scan(step, state, first_step + jnp.arange(steps))

    return compilation.jit(run), tx


def learn_permutation(module: nn.Module, params: Any, images: np.ndarray, labels: np.ndarray, *,
                      block_size: int, epsilon: float, additive: bool, steps: int,
                      batch_size: int, learning_rate: float, seed: int,
                      deadline: Deadline | None = None, chunk: int = 50,
                      init_logits: np.ndarray | None = None,
                      ) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Adam on the soft permutation (and pattern); returns (hard permutation, pattern, steps).

    The logits start near zero (every permutation equally likely) unless `init_logits` is given.
    """
    channels = images.shape[-1]
    size = block_size * block_size * channels
    rng = jax.random.key(seed)
    logits = (0.01 * jax.random.normal(jax.random.fold_in(rng, 1), (size, size))
              if init_logits is None else jnp.asarray(init_logits, jnp.float32))
    variables = {"logits": logits}
    if additive:
        variables["pattern"] = jnp.zeros(images.shape[1:], jnp.float32)
    tx = _runner(module, block_size, batch_size, learning_rate, 1, steps, additive)[1]
    state = (variables, tx.init(variables))
    images_j, labels_j = jnp.asarray(images), jnp.asarray(labels)
    done = 0
    while done < steps:
        if done and deadline is not None and deadline.expired():
            break
        count = min(chunk, steps - done)
        run = _runner(module, block_size, batch_size, learning_rate, count, steps, additive)[0]
        state, _ = run(state, params, images_j, labels_j, jnp.float32(epsilon), rng,
                       jnp.int32(done))
        done += count
    variables = state[0]
    permutation = hard_permutation(np.asarray(sinkhorn(variables["logits"] / 0.03)))
    pattern = (np.asarray(epsilon * jnp.tanh(variables["pattern"]), np.float32)
               if additive else None)
    return permutation, pattern, done


def unlocked_images(images: np.ndarray, permutation: np.ndarray, pattern: np.ndarray | None,
                    block_size: int) -> np.ndarray:
    """The thief's stand-in for the licence: its permutation, then its pattern, clipped."""
    shuffled = block_shuffle(jnp.asarray(images), jnp.asarray(permutation), block_size)
    if pattern is not None:
        shuffled = shuffled + pattern
    return np.asarray(jnp.clip(shuffled, 0.0, 1.0))


def run(setting: Setting, budget: Any, eval_images: int, deadline: Deadline) -> dict[str, Any]:
    """Per data fraction: learn a permutation (+ pattern); clean-test accuracy through it."""
    spec = setting.spec
    if "shuffle" not in spec.kind:
        return {"skipped": f"transform kind {spec.kind!r} has no permutation to learn"}
    images, labels = eval_subset(setting, eval_images)
    target, additive = setting.protected, "additive" in spec.kind
    true = np.asarray(block_permutation(setting.licence.key(), spec.block_size, images.shape[-1]))
    rows, stopped = [], False
    for index, fraction in enumerate(budget.fractions):
        if rows and deadline.expired():
            stopped = True
            break
        train_x, train_y = train_subset(setting, float(fraction), setting.seed + 300 + index)
        tries = []
        for restart in range(int(budget.restarts)):
            if tries and deadline.expired():
                break
            permutation, pattern, steps_run = learn_permutation(
                target.module, target.params, train_x, train_y, block_size=spec.block_size,
                epsilon=float(spec.epsilon), additive=additive, steps=int(budget.steps),
                batch_size=int(budget.batch_size), learning_rate=float(budget.learning_rate),
                seed=setting.seed + 17 * index + 1000 * restart, deadline=deadline)
            own = accuracy(target, target.params,
                           unlocked_images(train_x, permutation, pattern, spec.block_size), train_y)
            tries.append((own, permutation, pattern, steps_run))
        own, permutation, pattern, steps_run = max(tries, key=lambda t: t[0])
        test = accuracy(target, target.params,
                        unlocked_images(images, permutation, pattern, spec.block_size), labels)
        rows.append({"fraction": float(fraction), "train_images": int(train_x.shape[0]),
                     "steps": steps_run, "restarts_train_accuracy": [t[0] for t in tries],
                     "train_accuracy": float(own), "accuracy": float(test),
                     # Control only (needs the key; the permutation itself is never written).
                     "positions_matching_true_permutation": float((permutation == true).mean())})
    best = max((row["accuracy"] for row in rows), default=float("nan"))
    return {"rows": rows, "stopped_early": stopped, "eval_images": int(images.shape[0]),
            "steps": int(budget.steps), "batch_size": int(budget.batch_size),
            "restarts": int(budget.restarts), "block_values": int(true.size),
            "max_accuracy": best}
