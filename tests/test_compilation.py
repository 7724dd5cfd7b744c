"""The project's XLA options: which backend gets them; they change the program, not its values."""

import jax
import jax.numpy as jnp
import numpy as np

from isnn_jax.base import compilation
from isnn_jax.models import build_model


def test_only_the_cpu_gets_options():
    assert compilation.compiler_options("cpu") == {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert compilation.compiler_options("gpu") == {}
    assert compilation.compiler_options("tpu") == {}


def test_the_cpu_program_has_no_library_fusions_and_the_same_gradients():
    model = build_model({"name": "small_cnn", "features": (4, 8), "hidden": 16}, 10)
    images = jax.random.uniform(jax.random.key(0), (8, 28, 28, 1))
    labels = jnp.arange(8) % 10
    params = model.init(jax.random.key(1), images)["params"]

    def loss(p):
        logits = model.apply({"params": p}, images)
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1).mean()

    grad = jax.grad(loss)
    ours = compilation.jit(grad)
    text = ours.lower(params).compile().as_text()
    assert "ynn" not in text.lower()
    assert "ynn" in jax.jit(grad).lower(params).compile().as_text().lower()  # XLA's default
    for a, b in zip(jax.tree.leaves(ours(params)), jax.tree.leaves(jax.jit(grad)(params))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
