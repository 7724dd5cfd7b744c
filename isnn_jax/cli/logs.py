"""Logging for the commands: this package's progress on stderr, other libraries' warnings only."""

from __future__ import annotations

import logging

log = logging.getLogger("isnn_jax")


# Orbax logs these through absl at WARNING whenever a checkpoint directory is opened read-only
# (inference, evaluation, export); they describe Orbax's own option handling, not a problem.
_ORBAX_READ_ONLY_NOTICES = (
    "CheckpointManagerOptions.read_only=True, setting",
    "Given directory is read only",
)


class _OrbaxReadOnlyNotices(logging.Filter):
    """Drop exactly Orbax's read-only notices; every other absl record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ("orbax" in record.pathname and isinstance(record.msg, str)
                    and record.msg.startswith(_ORBAX_READ_ONLY_NOTICES))


_NOTICE_FILTER = _OrbaxReadOnlyNotices()


def quiet_libraries() -> None:
    """Silence Orbax's read-only notices on the absl logger (idempotent); warnings and errors
    of every other kind still reach stderr."""
    absl_logger = logging.getLogger("absl")
    if _NOTICE_FILTER not in absl_logger.filters:
        absl_logger.addFilter(_NOTICE_FILTER)


def setup_logging(*, verbose: bool = True) -> None:
    """Timestamped lines on stderr: this package's progress at INFO (when `verbose`), other
    libraries' warnings only (Orbax and TFDS log every file operation at INFO)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", force=True)
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    quiet_libraries()
