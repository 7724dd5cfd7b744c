"""Simulated thieves inside the train step: penalise what fine-tuning the weights would reach.

A thief holding the weights fine-tunes them on clean labelled images. Inside every protected
step this module plays such thieves: from the current parameters, `inner_steps` steps of each
thief's optimiser (SGD or Adam at its learning rate; the thieves of one optimiser run side by
side under `vmap`) on the first half of the step's clean images, then the thieves' logits on
the other half. The penalty is their KL to uniform there (bounded below, unlike the thieves'
negated cross-entropy); the outer gradient flows through the inner steps (`first_order=False`)
or treats each thief's update as a constant shift of the weights (`first_order=True`, the
cheap variant). The thieves use only the batch and the parameters: no randomness, no state,
so the step stays pure and resumes bit-exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from isnn_jax.protection.objective import accuracy, cross_entropy, uniform_kl

Apply = Callable[[Any, jax.Array], jax.Array]
OPTIMISERS = ("sgd", "adam")


def parse_thieves(entries: tuple[str, ...] | list[str]) -> tuple[tuple[str, float], ...]:
    """("sgd:0.05", "adam:1e-3") -> (("sgd", 0.05), ("adam", 0.001)), with the fix on bad ones."""
    thieves = []
    for entry in entries:
        name, _, rate = str(entry).partition(":")
        try:
            value = float(rate)
        except ValueError:
            value = -1.0
        if name not in OPTIMISERS or not value > 0:
            raise ValueError(f"config.simulated.thieves entry {entry!r} is not OPTIMISER:RATE with "
                             f"OPTIMISER one of {', '.join(OPTIMISERS)} and RATE > 0, "
                             "e.g. 'sgd:0.05'")
        thieves.append((name, value))
    return tuple(thieves)


@dataclasses.dataclass(frozen=True)
class SimulatedThieves:
    """Static description of the thieves played in every step (none: off)."""

    thieves: tuple[tuple[str, float], ...] = ()
    inner_steps: int = 3
    first_order: bool = False

    def __post_init__(self) -> None:
        if self.thieves and self.inner_steps < 1:
            raise ValueError(f"config.simulated.inner_steps must be >= 1, got {self.inner_steps}")

    @property
    def active(self) -> bool:
        return bool(self.thieves)


def _optimiser(name: str, rate: jax.Array) -> optax.GradientTransformation:
    # eps_root keeps Adam differentiable where a gradient is zero (sqrt'(0) is infinite).
    return optax.sgd(rate) if name == "sgd" else optax.adam(rate, eps_root=1e-12)


def _thief_group(apply: Apply, params: Any, name: str, rates: jax.Array, images: jax.Array,
                 labels: jax.Array, steps: int, first_order: bool) -> jax.Array:
    """Parameters of every thief of one optimiser after `steps` steps, stacked on axis 0."""

    def one(rate: jax.Array) -> Any:
        tx = _optimiser(name, rate)
        start = params
        if first_order:  # the thief's moves are constants: only the start carries gradient
            start = jax.lax.stop_gradient(params)

        def step(carry: tuple[Any, Any], _: None) -> tuple[tuple[Any, Any], None]:
            theta, opt_state = carry
            grads = jax.grad(lambda p: cross_entropy(apply(p, images), labels))(theta)
            updates, opt_state = tx.update(grads, opt_state, theta)
            return (optax.apply_updates(theta, updates), opt_state), None

        (final, _), _ = jax.lax.scan(step, (start, tx.init(start)), None, length=steps)
        if first_order:
            final = jax.tree_util.tree_map(lambda p, f: p + jax.lax.stop_gradient(f - p),
                                           params, final)
        return final

    return jax.vmap(one)(rates)


def thieves_penalty(apply: Apply, params: Any, images: jax.Array, labels: jax.Array,
                    thieves: SimulatedThieves) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean KL-to-uniform of the thieves' outputs on held-out clean images, and their accuracy.

    The thieves train on the first half of `images` and are judged on the second half."""
    half = images.shape[0] // 2
    train_x, train_y = images[:half], labels[:half]
    held_x, held_y = images[half:2 * half], labels[half:2 * half]
    penalties, accuracies = [], []
    for name in OPTIMISERS:
        rates = [rate for optimiser, rate in thieves.thieves if optimiser == name]
        if not rates:
            continue
        finals = _thief_group(apply, params, name, jnp.asarray(rates, jnp.float32), train_x,
                              train_y, thieves.inner_steps, thieves.first_order)
        logits = jax.vmap(lambda p: apply(p, held_x))(finals)
        penalties.append(jax.vmap(lambda z: uniform_kl(z, held_y))(logits))
        accuracies.append(jax.vmap(lambda z: accuracy(z, held_y))(logits))
    penalty = jnp.concatenate(penalties).mean()
    return penalty, {"thief_loss": penalty, "thief_accuracy": jnp.concatenate(accuracies).max()}
