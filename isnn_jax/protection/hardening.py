"""Hardening: illegal views made by the attacks that break the default protection.

Two attacks of the security suite (docs/security.md) open the default model; training can put
their outputs into the illegal term, so the model learns to reject them too:

* unlock (attack 5): universal perturbations `u_j` that a thief with the weights would learn to
  make clean images classify correctly. Training keeps `unlock` such perturbations as part of the
  optimiser state (half bounded by the licence's epsilon, half by 1, i.e. unbounded on [0, 1]
  images), moves each one signed-gradient step per training step towards the thief's goal
  (cross-entropy of clip(x + u_j) with the true labels), and trains clip(x + u_j) as illegal.
  The perturbations depend on the weights and public data only (no key), like the attack's.
* estimate (attack 6): an eavesdropper's pattern estimate eps * sign(mean of N observed legal
  inputs - mean of N other clean images), N drawn per step between the configured bounds from
  the global batch; clip(x + estimate) is trained as illegal.

Both are functions of the step's rng and the global example index, so sharded jit and pmap
give the same views (the sums of the estimate span every device under pmap).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from isnn_jax.protection import randomness


@dataclasses.dataclass(frozen=True)
class Hardening:
    """Which attack views are trained as illegal (static; all off by default)."""

    unlock: int = 0  # universal perturbations trained against (0: none)
    unlock_step: float = 0.02  # signed-gradient step, as a fraction of each perturbation's bound
    estimate_observed: tuple[int, int] = (0, 0)  # (min, max) observed inputs N; (0, 0): off

    def __post_init__(self) -> None:
        low, high = self.estimate_observed
        if self.unlock < 0:
            raise ValueError(f"config.hardening.unlock_perturbations must be >= 0, got {self.unlock}")
        if not 0.0 < self.unlock_step <= 1.0:
            raise ValueError(
                f"config.hardening.unlock_step must be in (0, 1], got {self.unlock_step}")
        if (low, high) != (0, 0) and not 1 <= low <= high:
            raise ValueError(
                "config.hardening.estimate_min/estimate_max must be 0/0 (off) or "
                f"1 <= min <= max, got {low}/{high}")

    @property
    def estimate(self) -> bool:
        return self.estimate_observed[1] > 0

    def check_batch(self, global_batch: int) -> None:
        """The estimate draws N observed and N reference images from one global batch."""
        if self.estimate and 2 * self.estimate_observed[1] > global_batch:
            raise ValueError(
                f"config.hardening.estimate_max={self.estimate_observed[1]} needs a global "
                f"batch of at least {2 * self.estimate_observed[1]}, got {global_batch}; lower it "
                "or raise config.train.batch_size")


def unlock_bounds(count: int, epsilon: float) -> jax.Array:
    """Per-perturbation L-inf bounds: the first half epsilon, the rest 1 (unbounded)."""
    bounded = (count + 1) // 2
    return jnp.asarray([epsilon] * bounded + [1.0] * (count - bounded), jnp.float32)


def init_unlock(hardening: Hardening, epsilon: float, image_shape: tuple[int, ...],
                rng: jax.Array) -> jax.Array:
    """Random starting perturbations, uniform within half their bound, shape (count, H, W, C)."""
    bounds = unlock_bounds(hardening.unlock, epsilon).reshape(-1, *([1] * len(image_shape)))
    noise = jax.random.uniform(rng, (hardening.unlock, *image_shape), jnp.float32, -0.5, 0.5)
    return noise * bounds


def perturbed(images: jax.Array, perturbations: jax.Array) -> jax.Array:
    """clip(x + u_j) for every perturbation j, stacked perturbation-major along the batch."""
    views = jnp.clip(images[None] + perturbations[:, None], 0.0, 1.0)
    return views.reshape(-1, *images.shape[1:])


def unlock_update(apply: Callable[[Any, jax.Array], jax.Array], params: Any,
                  perturbations: jax.Array, images: jax.Array, labels: jax.Array,
                  hardening: Hardening, epsilon: float, axis_name: str | None) -> jax.Array:
    """One signed-gradient step of the thief's objective for every perturbation, projected."""
    def thief_loss(u: jax.Array) -> jax.Array:
        logits = apply(jax.lax.stop_gradient(params), perturbed(images, u))
        tiled = jnp.tile(labels, u.shape[0])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tiled).mean()

    grad = jax.grad(thief_loss)(perturbations)
    if axis_name is not None:
        grad = jax.lax.pmean(grad, axis_name)
    bounds = unlock_bounds(perturbations.shape[0], epsilon).reshape(-1, *([1] * (images.ndim - 1)))
    step = hardening.unlock_step * bounds
    return jnp.clip(perturbations - step * jnp.sign(grad), -bounds, bounds)


def _global_sum(values: jax.Array, axis_name: str | None) -> jax.Array:
    total = values.sum(axis=0)
    return total if axis_name is None else jax.lax.psum(total, axis_name)


def estimated_pattern(hardening: Hardening, epsilon: float, legal: jax.Array, clean: jax.Array,
                      step_rng: jax.Array, example_keys: jax.Array, global_batch: int,
                      axis_name: str | None) -> jax.Array:
    """eps * sign(mean(legal[A]) - mean(clean[B])), A and B disjoint random sets of N examples.

    N is drawn per step in the configured range; example i joins A when its uniform draw is
    below N / global_batch and B when it is in [N / global_batch, 2N / global_batch), so the
    sets are N large on average and depend only on the global example index.
    """
    low, high = hardening.estimate_observed
    size_key = jax.random.fold_in(step_rng, randomness.ESTIMATE_SIZE)
    observed = jax.random.randint(size_key, (), low, high + 1).astype(jnp.float32)
    draws = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, randomness.ESTIMATE_MEMBERSHIP)))(
        example_keys)
    share = observed / global_batch
    in_a = (draws < share).astype(jnp.float32)
    in_b = ((draws >= share) & (draws < 2 * share)).astype(jnp.float32)
    shape = (-1,) + (1,) * (legal.ndim - 1)
    sum_a = _global_sum(legal * in_a.reshape(shape), axis_name)
    sum_b = _global_sum(clean * in_b.reshape(shape), axis_name)
    count_a = jnp.maximum(_global_sum(in_a, axis_name), 1.0)
    count_b = jnp.maximum(_global_sum(in_b, axis_name), 1.0)
    return epsilon * jnp.sign(sum_a / count_a - sum_b / count_b)
