"""The pure training step: build the legal and illegal views on device, one fused forward pass.

`train_step(state, batch, rng, keys) -> (state, metrics)`. The host sends clean images only;
the legal view, the wrong-key views (fresh random keys every step, drawn from
`fold_in(rng, step)`) and the near-key views are made inside the step. `keys` carries the
licence key and the near keys as arguments, never as compiled-in constants, and never as part
of the state, so they cannot reach a checkpoint.

A model is a Flax linen module (parameters only; one fused forward pass over every view), or
an object with more variables than parameters or a training switch (`isnn_jax.models`'
StatefulModel: `split`, `merge`, `eval_apply`, `train_apply`, `batch_statistics`). For the
latter the protected step normalises every view with the legal images' own batch statistics
(which the moving averages then follow, as a buyer's model sees only legal inputs) and runs
the fused pass in inference mode, without dropout, so legal and illegal views pass through
exactly the same function: docs/decisions.md records the two designs that failed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from isnn_jax.protection import objective, randomness
from isnn_jax.protection.hardening import (Hardening, estimated_pattern, init_unlock, perturbed,
                                          unlock_update)
from isnn_jax.protection.licence import TransformSpec
from isnn_jax.protection.simulated import SimulatedThieves, thieves_penalty
from isnn_jax.protection.transforms import apply_per_example, apply_transform, blend

Batch = Mapping[str, jax.Array]
StepFn = Callable[[Any, Batch, jax.Array, Mapping[str, jax.Array]], tuple[Any, dict]]


class TrainState(struct.PyTreeNode):
    """Everything a checkpoint holds: step, parameters, optimiser state (never a key).

    With unlock hardening the optimiser state is {"optimizer": ..., "unlock": perturbations}:
    the thief's perturbations are the other player's state of the min-max game, and resuming
    needs them.
    """

    step: jax.Array
    params: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class Protection:
    """How the illegal views are made and weighted (public, static parameters)."""

    spec: TransformSpec
    protect: bool = True
    wrong_views: int = 1
    illegal_every: int = 1  # illegal views of every n-th example only (by global index)
    wrong_key_group: int = 1  # consecutive examples (by global index) sharing one wrong key
    partial_max: float = 0.5  # partial-key views carry a legal fraction drawn in [0, partial_max]
    weights: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"clean": 1.0, "wrong": 1.0, "near": 1.0}
    )
    illegal_form: str = "uniform_constant"
    temperature: float = 1.0
    hardening: Hardening = Hardening()
    simulated: SimulatedThieves = SimulatedThieves()

    def __hash__(self) -> int:
        return hash((self.spec, self.protect, self.wrong_views, self.illegal_every,
                     self.wrong_key_group, self.partial_max,
                     tuple(sorted(self.weights.items())),
                     self.illegal_form, self.temperature, self.hardening, self.simulated))

    @property
    def unlock(self) -> bool:
        """Whether the state carries unlock perturbations (protected training only)."""
        return self.protect and self.hardening.unlock > 0


def is_stateful(model: Any) -> bool:
    """Whether `model` has variables besides its parameters or a training switch."""
    return hasattr(model, "train_apply")


def trainable_part(model: Any, params: Any) -> tuple[Any, dict[str, Any]]:
    """(what the optimiser updates, the other variables) of a model's `params` tree."""
    return model.split(params) if is_stateful(model) else (params, {})


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
               image_shape: tuple[int, int, int],
               protection: Protection | None = None, params: Any = None) -> TrainState:
    """Fresh (or the given) parameters and a fresh optimiser state for images of `image_shape`."""
    if params is None:
        params = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32))["params"]
    opt_state = tx.init(trainable_part(model, params)[0])
    if protection is not None and protection.unlock:
        unlock = init_unlock(protection.hardening, protection.spec.epsilon, image_shape,
                             jax.random.fold_in(rng, randomness.INIT_UNLOCK))
        opt_state = {"optimizer": opt_state, "unlock": unlock}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)


def example_keys(stream: jax.Array, first: jax.Array | int, count: int, every: int = 1,
                 group: int = 1) -> jax.Array:
    """One key per global example index `first, first + every, ...` (`count` of them) of
    `stream`; with `group` g, indices g*j .. g*j + g - 1 share the key of j.

    Keys depend on an example's global index only, so splitting the batch over devices
    (sharded jit or pmap, any device count) draws exactly the same keys for every example.
    """
    indices = first + every * jnp.arange(count)
    return jax.vmap(lambda index: jax.random.fold_in(stream, index // group))(indices)


def make_views(protection: Protection, keys: Mapping[str, jax.Array], images: jax.Array,
               step_rng: jax.Array, first_example: jax.Array | int = 0,
               global_batch: int | None = None, unlock: jax.Array | None = None,
               axis_name: str | None = None) -> dict[str, jax.Array]:
    """The legal view and every illegal view of a batch of clean images, in a fixed order.

    `images` are the global batch's examples `first_example ..` (a device's shard under pmap);
    `global_batch` (default: this batch) numbers the wrong-key views of all devices apart.
    `unlock` holds the thief's perturbations (unlock hardening); `axis_name` (pmap) lets the
    estimate hardening average over every device's shard. With `illegal_every` n > 1 the clean,
    wrong-key and near views are made of every n-th example only (global index 0 mod n: the
    same examples and keys for any device count, as each shard's size divides by n).
    With `wrong_key_group` g > 1, examples g*j .. g*j + g - 1 share one wrong key per view, so
    the loss sees each wrong key on several images, as an attacker's guess is used.
    """
    spec = protection.spec
    batch = images.shape[0]
    global_batch = batch if global_batch is None else global_batch
    every = protection.illegal_every
    some = images[::every]  # a static stride: the examples that get illegal views
    views = {"legal": apply_transform(spec, keys["licence"], images)}
    if protection.weights.get("clean", 0.0) > 0:
        views["clean"] = some
    if protection.wrong_views > 0:
        stream = jax.random.fold_in(step_rng, randomness.WRONG_KEYS)
        wrong_keys = jnp.concatenate([
            example_keys(stream, view * global_batch + first_example, some.shape[0], every,
                         protection.wrong_key_group)
            for view in range(protection.wrong_views)])
        tiled = jnp.tile(some, (protection.wrong_views, 1, 1, 1))
        views["wrong"] = apply_per_example(spec, wrong_keys, tiled)
    near = keys.get("near")
    if near is not None and near.shape[0] > 0 and protection.weights.get("near", 0.0) > 0:
        draw = example_keys(jax.random.fold_in(step_rng, randomness.NEAR_KEYS), first_example,
                            some.shape[0], every)
        choice = jax.vmap(lambda k: jax.random.randint(k, (), 0, near.shape[0]))(draw)
        views["near"] = apply_per_example(spec, near[choice], some)
    if protection.weights.get("partial", 0.0) > 0:
        views["partial"] = partial_view(protection, views["legal"][::every], some, step_rng,
                                        first_example)
    hardening = protection.hardening
    if hardening.estimate:
        estimate_keys = example_keys(jax.random.fold_in(step_rng, randomness.ESTIMATE_EXAMPLES),
                                     first_example, batch)
        pattern = estimated_pattern(hardening, spec.epsilon, views["legal"], images, step_rng,
                                    estimate_keys, global_batch, axis_name)
        views["estimate"] = jnp.clip(images + pattern, 0.0, 1.0)
    if unlock is not None:
        views["unlock"] = perturbed(images, unlock)
    return views


def partial_view(protection: Protection, legal: jax.Array, images: jax.Array,
                 step_rng: jax.Array, first_example: jax.Array | int = 0) -> jax.Array:
    """`images` carrying a legal fraction `a ~ U[0, partial_max]` of their legal views `legal`,
    the rest from a fresh random key each: what a partly right key (a lucky guess, an
    estimate) gives. Trained as illegal, they make the model answer only to (nearly) the whole
    legal signal rather than to any trace of it."""
    every = protection.illegal_every
    example = example_keys(jax.random.fold_in(step_rng, randomness.PARTIAL_KEYS),
                           first_example, images.shape[0], every)
    amounts = protection.partial_max * jax.vmap(
        lambda k: jax.random.uniform(jax.random.fold_in(k, 1)))(example)
    spec = protection.spec
    return blend(spec, legal, apply_per_example(spec, example, images), amounts)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    protection: Protection, axis_name: str | None = None) -> StepFn:
    """The pure step for `model`.

    With `axis_name` (pmap), each device holds a shard of the batch: gradients and metrics are
    averaged with `lax.pmean` over that axis and the random views are numbered by global example
    index, so the result equals the sharded-jit and single-device step up to reduction order.
    """

    stateful = is_stateful(model)

    def infer(params: Any, state: dict[str, Any], images: jax.Array) -> jax.Array:
        if stateful:
            return model.eval_apply(params, state, images)
        return model.apply({"params": params}, images)

    def loss_fn(params: Any, model_state: dict[str, Any], batch: Batch, step_rng: jax.Array,
                keys: Mapping[str, jax.Array],
                unlock: jax.Array | None) -> tuple[jax.Array, tuple[dict, dict]]:
        images, labels = batch["image"], batch["label"]
        dropout = jax.random.fold_in(step_rng, randomness.DROPOUT)
        if axis_name is not None:
            dropout = jax.random.fold_in(dropout, jax.lax.axis_index(axis_name))
        if not protection.protect:
            if stateful:
                logits, model_state = model.train_apply(params, model_state, images, dropout)
            else:
                logits = model.apply({"params": params}, images)
            loss = objective.cross_entropy(logits, labels)
            return loss, ({"loss": loss, "accuracy": objective.accuracy(logits, labels)},
                          model_state)
        local = images.shape[0]
        if axis_name is None:
            first, global_batch = 0, local
        else:
            first = jax.lax.axis_index(axis_name) * local
            global_batch = local * jax.lax.psum(1, axis_name)
        views = make_views(protection, keys, images, step_rng, first, global_batch, unlock,
                           axis_name)
        sizes = [v.shape[0] for v in views.values()]
        # One fused forward pass over all views: one large matmul per layer.
        every_view = jnp.concatenate(list(views.values()))
        if stateful:  # every view normalised with the legal batch's statistics, no dropout
            statistics, model_state = model.batch_statistics(params, model_state,
                                                             views["legal"], dropout)
            logits = model.eval_apply(params, statistics, every_view)
        else:
            logits = model.apply({"params": params}, every_view)
        splits = jnp.split(logits, _offsets(sizes))
        loss, metrics = objective.combined_loss(dict(zip(views, splits)), labels,
                                                protection.weights, protection.illegal_form,
                                                protection.temperature, axis_name,
                                                illegal_every=protection.illegal_every)
        if protection.simulated.active:  # what thieves fine-tuning these weights would reach
            penalty, thief_metrics = thieves_penalty(
                lambda p, x: infer(p, model_state, x), params, images, labels,
                protection.simulated)
            loss = loss + protection.weights.get("thief", 1.0) * penalty
            metrics = {**metrics, **thief_metrics, "loss": loss}
        return loss, (metrics, model_state)

    def train_step(state: TrainState, batch: Batch, rng: jax.Array,
                   keys: Mapping[str, jax.Array]) -> tuple[TrainState, dict]:
        step_rng = jax.random.fold_in(rng, state.step)
        opt_state, unlock = state.opt_state, None
        if protection.unlock:
            opt_state, unlock = opt_state["optimizer"], opt_state["unlock"]
        params, model_state = trainable_part(model, state.params)
        grads, (metrics, model_state) = jax.grad(loss_fn, has_aux=True)(
            params, model_state, batch, step_rng, keys, unlock)
        if axis_name is not None:  # equal shard sizes: the mean of means is the global mean
            grads, metrics, model_state = jax.lax.pmean((grads, metrics, model_state), axis_name)
        updates, opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        if unlock is not None:  # the thief's move, against the weights it was measured on
            _, old_state = trainable_part(model, state.params)
            unlock = unlock_update(lambda p, x: infer(p, old_state, x), params,
                                   unlock, batch["image"], batch["label"], protection.hardening,
                                   protection.spec.epsilon, axis_name)
            opt_state = {"optimizer": opt_state, "unlock": unlock}
        if stateful:
            new_params = model.merge(new_params, model_state)
        return state.replace(step=state.step + 1, params=new_params,
                             opt_state=opt_state), metrics

    return train_step


def _offsets(sizes: list[int]) -> list[int]:
    offsets, total = [], 0
    for size in sizes[:-1]:
        total += size
        offsets.append(total)
    return offsets
