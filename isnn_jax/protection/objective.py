"""The combined ISNN objective: right on legal inputs, far from the truth on illegal ones.

loss = CE(legal) + w_clean * I(clean) + w_wrong * I(random keys) + w_near * I(near keys)
       + w_partial * I(partial keys: a fraction of the legal signal, the rest another key's)

`I` is an illegal-input loss, one of five forms (ILLEGAL_FORMS; compared in docs/decisions.md):
* "uniform": KL(uniform || p), pushes the output distribution to uniform (no class is favoured,
  so the true class cannot be read off the output either);
* "suppress": -log(1 - p_true), pushes the true-class probability to zero (the argmin of the
  output then points at the truth, which a thief can exploit; kept for comparison);
* "uniform_margin": the uniform term plus a hinge that keeps the true logit at least `MARGIN`
  below the largest other logit, so near-flat outputs cannot still rank the truth first (the
  truth ends up just below the top, not at the bottom, so the argmin does not reveal it either).
  Measured: the network learns to *invert* its classifier instead, and the argmin of a clean
  image's output names the truth 85% of the time (docs/results.md); kept to show that;
* "uniform_constant": the uniform term plus the batch variance of the centred logits, so every
  illegal input gets the same (flat) output: an output that does not depend on the input
  cannot tell a thief anything about its label, by argmax, argmin or any other rank (the default);
* "constant": the batch variance term alone, without the uniform term (kept as an option).
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

ILLEGAL_FORMS = ("uniform", "suppress", "uniform_margin", "uniform_constant", "constant")
MARGIN = 0.5  # logit gap the "uniform_margin" hinge asks between the top other class and the truth


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy against integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def uniform_kl(logits: jax.Array, labels: jax.Array, axis_name: str | None = None) -> jax.Array:
    """Mean KL(uniform || softmax(logits)); zero exactly when the output is uniform."""
    del labels
    log_probs = jax.nn.log_softmax(logits)
    num_classes = logits.shape[-1]
    return (-jnp.log(num_classes) - log_probs.mean(axis=-1)).mean()


def suppress_true(logits: jax.Array, labels: jax.Array, axis_name: str | None = None) -> jax.Array:
    """Mean -log(1 - p_true): large while the true class keeps probability mass."""
    log_probs = jax.nn.log_softmax(logits)
    log_p_true = jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
    # log(1 - p) computed stably from log p.
    return (-jnp.log1p(-jnp.exp(jnp.minimum(log_p_true, -1e-6)))).mean()


def true_class_margin(logits: jax.Array, labels: jax.Array, margin: float = MARGIN) -> jax.Array:
    """Mean hinge max(0, z_true - max_{j != true} z_j + margin): zero once the truth is not on top."""
    num_classes = logits.shape[-1]
    is_true = jax.nn.one_hot(labels, num_classes, dtype=bool)
    true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    best_other = jnp.where(is_true, -jnp.inf, logits).max(axis=-1)
    return jax.nn.relu(true_logit - best_other + margin).mean()


def uniform_margin(logits: jax.Array, labels: jax.Array, axis_name: str | None = None) -> jax.Array:
    """KL to uniform plus the true-class margin hinge."""
    return uniform_kl(logits, labels) + true_class_margin(logits, labels)


def _batch_mean(values: jax.Array, axis_name: str | None) -> jax.Array:
    """Mean over the global batch: over this shard, then across devices under pmap."""
    mean = values.mean(axis=0)
    return mean if axis_name is None else jax.lax.pmean(mean, axis_name)


def output_variance(logits: jax.Array, labels: jax.Array, axis_name: str | None = None) -> jax.Array:
    """Global-batch variance of the centred logits, summed over classes: zero when every output
    is equal. Under pmap (`axis_name`) the statistics span all devices, as under sharded jit."""
    del labels
    centred = logits - logits.mean(axis=-1, keepdims=True)
    mean = _batch_mean(centred, axis_name)
    return _batch_mean((centred - mean) ** 2, axis_name).sum()


def uniform_constant(logits: jax.Array, labels: jax.Array, axis_name: str | None = None) -> jax.Array:
    """KL to uniform plus the output variance across the batch."""
    return uniform_kl(logits, labels) + output_variance(logits, labels, axis_name)


ILLEGAL_LOSSES: Mapping[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "uniform": uniform_kl,
    "suppress": suppress_true,
    "uniform_margin": uniform_margin,
    "uniform_constant": uniform_constant,
    "constant": output_variance,
}


SUBSET_VIEWS = ("clean", "wrong", "near", "partial")  # the views `illegal_every` thins


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of argmax predictions equal to the labels."""
    return (logits.argmax(axis=-1) == labels).mean()


def combined_loss(
    views: Mapping[str, jax.Array],
    labels: jax.Array,
    weights: Mapping[str, float],
    illegal_form: str = "uniform_constant",
    temperature: float = 1.0,
    axis_name: str | None = None,
    illegal_every: int = 1,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The combined loss over the views' logits and the metrics of every view.

    `views` maps "legal" and any of "clean", "wrong", "near", "partial" to logits whose leading
    dimension is a multiple of the batch (several wrong-key views per image are stacked along it).
    `weights` gives the weight of each illegal view; a view with weight 0 is only measured.
    `temperature` multiplies illegal logits before the illegal loss: with a large value, small
    logits that still rank the true class first are penalised (shrinking the logits alone no
    longer satisfies the loss, so the argmax must stop carrying the label).
    `axis_name` (pmap only) makes batch statistics span every device's shard.
    `illegal_every` n: the clean, wrong-key, near and partial views hold every n-th example only
    (`labels[::n]`); the other views (hardening) hold every example.
    """
    if illegal_form not in ILLEGAL_LOSSES:
        raise ValueError(
            f"unknown illegal_form {illegal_form!r}; choose one of {', '.join(ILLEGAL_FORMS)}"
        )
    illegal = ILLEGAL_LOSSES[illegal_form]
    legal_loss = cross_entropy(views["legal"], labels)
    total = legal_loss
    metrics = {"legal_loss": legal_loss, "legal_accuracy": accuracy(views["legal"], labels)}
    for name, logits in views.items():
        if name == "legal":
            continue
        of = labels[::illegal_every] if name in SUBSET_VIEWS else labels
        view_labels = jnp.tile(of, logits.shape[0] // of.shape[0])
        term = illegal(logits * temperature, view_labels, axis_name=axis_name)
        total = total + weights.get(name, 0.0) * term
        metrics[f"{name}_loss"] = term
        metrics[f"{name}_accuracy"] = accuracy(logits, view_labels)
    metrics["loss"] = total
    return total, metrics
