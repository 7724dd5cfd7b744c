"""The revived start point: stolen kernels kept, every hidden unit re-centred on the thief's
images, so a layer switched off on clean inputs passes gradients again."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from isnn_jax.attacks.revive import recentred_paths, revived
from isnn_jax.models import build_model


def test_a_switched_off_layer_is_revived_and_passes_gradients_again():
    model = build_model({"name": "mlp", "widths": (32, 32)}, 10)
    images = np.asarray(jax.random.uniform(jax.random.key(1), (100, 8, 8, 1)))
    labels = np.arange(100) % 10
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    dead = {**params, "Dense_1": {**params["Dense_1"], "bias": params["Dense_1"]["bias"] - 100.0}}

    @jax.jit
    def gradient(p):
        loss = lambda q: optax.softmax_cross_entropy_with_integer_labels(  # noqa: E731
            model.apply({"params": q}, images), labels).mean()
        return jax.grad(loss)(p)["Dense_0"]["kernel"]

    def first_kernel_gradient(p):
        return np.abs(np.asarray(gradient(p))).max()

    assert first_kernel_gradient(dead) == 0.0  # no gradient crosses the switched-off layer
    assert recentred_paths(model, dead, images, ("head",)) == [("Dense_0",), ("Dense_1",)]
    alive = revived(model, dead, images, ("head",))
    assert first_kernel_gradient(alive) > 1e-4
    for name in ("Dense_0", "Dense_1", "head"):  # every kernel as stolen, the head untouched
        np.testing.assert_array_equal(alive[name]["kernel"], dead[name]["kernel"])
    np.testing.assert_array_equal(alive["head"]["bias"], dead["head"]["bias"])
    hidden = np.asarray(images.reshape(100, -1) @ alive["Dense_0"]["kernel"]
                        + alive["Dense_0"]["bias"])
    assert abs((hidden > 0).mean() - 0.5) < 0.01  # each unit fires on half the thief's images
    second = np.maximum(hidden, 0) @ alive["Dense_1"]["kernel"] + alive["Dense_1"]["bias"]
    assert np.abs(np.median(second, axis=0)).max() < 1e-5
