"""The command-line path train and protect share: flags, config, cluster, logging, licence.

`training_main` parses the flags and the config, joins the cluster, sets up logging and calls
the door's `run(args, config)`; `resolve_licence` reads or issues a training run's licence.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections

from isnn_jax.cli.configs import add_config_argument, parse_with_config
from isnn_jax.cli.doors import EXIT_OK, ArgumentParser, command
from isnn_jax.cli.logs import setup_logging
from isnn_jax.evaluation.report import format_report
from isnn_jax.protection.licence import Licence, LicenceError, check_licence_outside
from isnn_jax.training.distributed import initialize_distributed
from isnn_jax.training.setup import transform_spec

log = logging.getLogger("isnn_jax")


def resolve_licence(config: ml_collections.ConfigDict, workdir: Path, licence_file: str | None,
                    issue_file: str | None) -> tuple[Any, Callable[[], None] | None]:
    """(the Licence of a training run, how to save it): --licence FILE is read (nothing to
    save); --issue_licence NEW_FILE issues one (one process only, never inside the workdir),
    saved by the returned function once the run has passed its checks; (None, None) for an
    unprotected run."""
    if not config.protect:
        return None, None
    if licence_file and issue_file:
        raise LicenceError("pass either --licence (existing file) or --issue_licence (new file)")
    if licence_file:
        return Licence.load(licence_file), None
    if not issue_file:
        raise LicenceError("a protected run needs --licence FILE (existing) or --issue_licence "
                           "NEW_FILE (issue a new licence there); keep it outside the workdir")
    if jax.process_count() > 1:
        raise LicenceError("--issue_licence cannot be used by several processes; issue the licence "
                           "once (python -m isnn_jax.licence ISSUE ...) or in a one-process run, "
                           "copy it to every worker and pass --licence FILE")
    path = Path(issue_file).absolute()
    check_licence_outside(workdir, path)
    if path.exists():
        raise LicenceError(f"{path} already exists; refusing to overwrite a licence (choose "
                           "another path)")  # the words of Licence.save, which checks again
    licence = Licence.issue(config.licence.copyright, transform_spec(config))

    def save() -> None:
        licence.save(path)
        log.info("issued licence %s into %s (mode 0600)", licence.fingerprint(), path)

    return licence, save


TrainingRun = Callable[[argparse.Namespace, ml_collections.ConfigDict], "str | None"]


@command
def training_main(argv: Sequence[str] | None, *, prog: str, description: str | None,
                  add_arguments: Callable[[argparse.ArgumentParser], None],
                  run: TrainingRun) -> int:
    """The command-line path train and protect share: parse the flags and the config, join
    the cluster, set up logging, call `run(args, config)` and print what it returns (process 0
    only). Errors and preemption leave through `command`."""
    parser = ArgumentParser(prog=prog, description=description)
    add_config_argument(parser)
    add_arguments(parser)
    args, config = parse_with_config(parser, argv)
    setup_logging(verbose=False)
    initialize_distributed(config)
    is_main = jax.process_index() == 0
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    output = run(args, config)
    if output and is_main:
        print(output)
    return EXIT_OK


def training_summary(report: dict[str, Any], workdir: Path) -> str:
    """What `python -m isnn_jax.train` prints: the headline numbers and where the report is."""
    if report.get("stopped_early"):
        return f"stopped at step {report['step']} as asked; rerun the same command to resume"
    if "legal_accuracy" in report:
        summary = format_report(report)
    else:
        summary = f"unprotected baseline accuracy {report['clean_accuracy']:.2%}"
    return f"{summary}\nworkdir: {workdir}  (evaluation: {workdir / 'final_evaluation.json'})"
