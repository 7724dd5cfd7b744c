"""Shared fixtures: small, fast, no network."""

import os

# Several fake CPU devices so the sharded path is exercised; must precede the first jax import.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import pytest  # noqa: E402

from isnn_jax.licence import Licence, TransformSpec  # noqa: E402

SECRET = bytes(range(32))


@pytest.fixture
def licence() -> Licence:
    """A fixed licence (known secret) so results are reproducible across runs."""
    return Licence(SECRET, "(c) Seller Ltd; licensed to Buyer GmbH; licence 7", TransformSpec())
