"""Shared fixtures: small, fast, no network."""

import os
import shutil
import tempfile

# Several fake CPU devices so the sharded path is exercised; must precede the first jax import.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
# Many tests (and the trainer subprocesses they start, which inherit the environment) compile the
# same tiny programs: one persistent compilation cache for the session compiles each once.
_XLA_CACHE = tempfile.mkdtemp(prefix="isnn-test-xla-cache-")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import pytest  # noqa: E402

from isnn_jax.licence import Licence, TransformSpec  # noqa: E402

SECRET = bytes(range(32))


def pytest_sessionfinish(session, exitstatus) -> None:
    """Remove the session's compilation cache."""
    shutil.rmtree(_XLA_CACHE, ignore_errors=True)


@pytest.fixture
def licence() -> Licence:
    """A fixed licence (known secret) so results are reproducible across runs."""
    return Licence(SECRET, "(c) Seller Ltd; licensed to Buyer GmbH; licence 7", TransformSpec())


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """One TFDS data dir for every test that prepares the embedded digits."""
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory, data_dir):
    """A 2-epoch sharded run without interruption: the reference for resume, pmap and preemption."""
    from isnn_jax.train import train_and_evaluate
    from tiny_config import RESUME_LICENCE, short_config

    workdir = tmp_path_factory.mktemp("full") / "w"
    return workdir, train_and_evaluate(short_config(data_dir), workdir, RESUME_LICENCE)
