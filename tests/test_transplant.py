"""The key transplant: a protected base rewritten for another licence computes, on that
licence's legal inputs, exactly what the base computes on its own."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from isnn_jax.models import build_model
from isnn_jax.protection.licence import Licence, TransformSpec
from isnn_jax.runtime.model import ProtectedModel, apply_licence
from isnn_jax.seller.transplant import TransplantError, check_transplant, transplant

SHAPE = (8, 8, 1)


def _protected(name, spec, secret=1):
    model = build_model({"name": name, "widths": (32,), "features": (4, 8), "hidden": 8}, 10)
    params = jax.device_get(model.init(jax.random.key(3), jnp.zeros((1, *SHAPE)))["params"])
    licence = Licence(bytes([secret]) * 32, f"(c) S; buyer {secret}", spec)
    base = ProtectedModel.of(model, params, image_shape=SHAPE, num_classes=10)
    return dataclasses.replace(base, meta={**base.meta,
                                           "licence_fingerprint": licence.fingerprint()}), licence


@pytest.mark.parametrize("spec", [TransformSpec(kind="mix"), TransformSpec(kind="mix_sphere"),
                                  TransformSpec(kind="shuffle", block_size=4)])
def test_the_transplant_keeps_the_legal_outputs_and_moves_the_illegal_ones(spec):
    base, base_licence = _protected("mlp", spec)
    licence = Licence(bytes([2]) * 32, "(c) S; buyer 2", spec)
    params = transplant(base, base_licence, licence)
    new = dataclasses.replace(base, params=params,
                              meta={**base.meta, "licence_fingerprint": licence.fingerprint()})
    images = np.random.default_rng(0).random((32, *SHAPE), dtype=np.float32)
    assert check_transplant(base, base_licence, new, licence, images) < 1e-5
    # Only the first layer changed; on the base's own legal inputs the new model differs.
    assert np.array_equal(params["head"]["kernel"], base.params["head"]["kernel"])
    assert not np.allclose(params["Dense_0"]["kernel"], base.params["Dense_0"]["kernel"])
    base_legal = jnp.asarray(base.logits(images, base_licence))
    crossed = new.net(apply_licence(base_licence, images))
    assert float(jnp.abs(crossed - base_legal).max()) > 0.1


def test_what_cannot_be_transplanted_is_refused_with_the_alternative():
    base, base_licence = _protected("mlp", TransformSpec(kind="additive"))
    with pytest.raises(TransplantError, match="not an invertible linear map.*fine-tune"):
        transplant(base, base_licence, Licence(bytes(32), "(c) other",
                                               TransformSpec(kind="additive")))
    base, base_licence = _protected("small_cnn", TransformSpec(kind="mix"))
    with pytest.raises(TransplantError, match="0 dense kernels with 64 input rows"):
        transplant(base, base_licence, Licence(bytes(32), "(c) other", TransformSpec(kind="mix")))
    base, base_licence = _protected("mlp", TransformSpec(kind="mix"))
    with pytest.raises(TransplantError, match="issue the licence with the base's transform"):
        transplant(base, base_licence, Licence(bytes(32), "(c) other",
                                               TransformSpec(kind="shuffle", block_size=4)))
