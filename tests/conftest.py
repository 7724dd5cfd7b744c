"""Shared fixtures: small, fast, no network."""

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

# Several fake CPU devices so the sharded path is exercised; must precede the first jax import.
# Added to the user's own XLA_FLAGS (kept), unless they already choose a device count.
_DEVICES_FLAG = "--xla_force_host_platform_device_count"
if _DEVICES_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICES_FLAG}=2".strip()
# Many tests (and the trainer subprocesses they start, which inherit the environment) compile the
# same tiny programs: one persistent compilation cache for the session compiles each once.
# A user's own cache is used as it is; otherwise one made here (and named, so only it is removed).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["ISNN_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="isnn-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["ISNN_TEST_XLA_CACHE"]
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# One folder the workers of `pytest -n` share (they inherit it), for what one of them builds and
# the others reuse; made by the main process and removed by it.
if "ISNN_TEST_SHARED" not in os.environ:
    os.environ["ISNN_TEST_SHARED"] = tempfile.mkdtemp(prefix="isnn-test-shared-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Hypothesis: thorough locally, bounded in CI (CI=true) or with HYPOTHESIS_PROFILE=ci.
settings.register_profile("thorough", max_examples=300)
settings.register_profile("ci", max_examples=60)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                     "ci" if os.environ.get("CI") else "thorough"))

from isnn_jax.protection.licence import Licence, TransformSpec  # noqa: E402

SECRET = bytes(range(32))


# The longest files start first, so that `pytest -n 2` overlaps them with the short ones
# instead of leaving two of them to contend at the end.
LONGEST_FIRST = ("test_reliability.py", "test_multihost.py", "test_attack.py", "test_workflow.py",
                 "test_train.py", "test_objective.py", "test_parallel.py", "test_hardening.py",
                 "test_permutation_attack.py", "test_parameter_attack.py", "test_cli.py",
                 "test_trace_exposure.py")  # measured on a fresh clone, two workers


def pytest_collection_modifyitems(session, config, items) -> None:
    """Run the longest test files first (a stable sort: order within a file is kept)."""
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_sessionfinish(session, exitstatus) -> None:
    """Remove the session's compilation cache and shared folder (once: by the main process, not
    by each worker of `pytest -n`, which share them through the environment they inherit)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        for name in ("ISNN_TEST_XLA_CACHE", "ISNN_TEST_SHARED"):
            if os.environ.get(name):
                shutil.rmtree(os.environ[name], ignore_errors=True)


@pytest.fixture(autouse=True)
def restore_logging():
    """Undo what a command door run in-process does to logging: `setup_logging` replaces the
    root handlers with one bound to that test's captured stderr, which is closed afterwards."""
    import logging

    root, package = logging.getLogger(), logging.getLogger("isnn_jax")
    handlers, root_level, package_level = list(root.handlers), root.level, package.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(root_level)
    package.setLevel(package_level)


@pytest.fixture
def licence() -> Licence:
    """A fixed licence (known secret) so results are reproducible across runs."""
    return Licence(SECRET, "(c) Seller Ltd; licensed to Buyer GmbH; licence 7", TransformSpec())


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """One TFDS data dir for every test that prepares the embedded digits."""
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def protected_run(data_dir):
    """One tiny protected digits model (10 epochs, ~30 s), shared by every test that only reads
    it: (workdir, licence, final report). Measured: legal ~0.9, clean ~0.2. The first worker to
    ask trains it in the shared folder (under a lock); the others wait and read it."""
    from isnn_jax.training.loop import train_and_evaluate
    from tiny_config import PROTECTED_LICENCE, tiny_config

    shared = Path(os.environ["ISNN_TEST_SHARED"]) / "protected"
    shared.mkdir(exist_ok=True)
    workdir, done = shared / "work", shared / "work" / "final_evaluation.json"
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if done.exists():
                report = json.loads(done.read_text())
            else:
                report = train_and_evaluate(tiny_config(data_dir), workdir, PROTECTED_LICENCE)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return workdir, PROTECTED_LICENCE, report


@pytest.fixture(scope="session")
def attack_setting(protected_run):
    """The attack setting of the shared model; it doubles as the 'baseline' to exercise that path."""
    from isnn_jax.attacks.setting import load_setting

    workdir, licence, _ = protected_run
    return load_setting(workdir, licence, baseline_workdir=workdir)


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory, data_dir):
    """A 2-epoch sharded run without interruption: the reference for resume, pmap and preemption."""
    from isnn_jax.training.loop import train_and_evaluate
    from tiny_config import RESUME_LICENCE, short_config

    workdir = tmp_path_factory.mktemp("full") / "w"
    return workdir, train_and_evaluate(short_config(data_dir), workdir, RESUME_LICENCE)
