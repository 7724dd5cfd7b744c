"""The one command-line path of every isnn_jax command: flags, configs, licences, exit codes.

Every `python -m isnn_jax.X` door parses with `ArgumentParser` and runs inside `command`, which
turns the package's errors into one `error:` line and exit 2, a preemption into a `stopped:`
line and exit 75, and `--help` into exit 0. `train` and `protect` share `training_main`: the
same `--config` loading (a file, `FILE.py:ARG`, or a packaged name such as `fashion_mnist`),
the same `--config.a.b=VALUE` overrides, the same logging and the same error handling.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import importlib.util
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import ml_collections

from isnn_jax.config import ConfigError

EXIT_OK = 0
EXIT_USAGE = 2  # bad input: one `error:` line names the problem and the fix
EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL, as isnn_jax.preemption.EXIT_PREEMPTED

log = logging.getLogger("isnn_jax")
_Main = TypeVar("_Main", bound=Callable[..., Any])


class UsageError(ValueError):
    """The command line itself is wrong (a missing or unknown flag, a bad value)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a UsageError (one `error:` line, exit 2)
    instead of printing the usage block, and never abbreviates flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        """Raise instead of exiting, so `command` prints the line and returns 2."""
        raise UsageError(f"{message} (see {self.prog} --help)")


# ---------------------------------------------------------------------------------------------
# Errors -> exit codes


def _known_errors() -> tuple[type[BaseException], ...]:
    """ValueError, FileNotFoundError and the package's own RuntimeErrors that can have been
    raised: only modules already imported are asked, so this never imports JAX or Orbax."""
    known: list[type[BaseException]] = [ValueError, FileNotFoundError]
    if "isnn_jax.checkpoints" in sys.modules:
        from isnn_jax.checkpoints import CheckpointError

        known.append(CheckpointError)
    if "isnn_jax.train" in sys.modules:
        from isnn_jax.train import NonFiniteLossError

        known.append(NonFiniteLossError)
    if "isnn_jax.black_box" in sys.modules:
        from isnn_jax.black_box import BlackBoxError

        known.append(BlackBoxError)
    return tuple(known)


def exit_code(err: BaseException) -> int | None:
    """Print the one line for a known error and return its exit code; None for anything else
    (a bug, which the caller re-raises with its traceback)."""
    if "isnn_jax.preemption" in sys.modules:
        from isnn_jax.preemption import TrainingPreempted

        if isinstance(err, TrainingPreempted):
            print(f"stopped: {err}", file=sys.stderr)
            return EXIT_PREEMPTED
    if isinstance(err, _known_errors()):
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return None


def command(main: _Main) -> _Main:
    """Decorate a command's `main(argv) -> int`: known errors become one `error:` line and
    exit 2, a preemption exit 75, `--help` exit 0; Orbax's read-only notices are silenced."""

    @functools.wraps(main)
    def door(*args: Any, **kwargs: Any) -> int:
        quiet_libraries()
        try:
            return int(main(*args, **kwargs) or EXIT_OK)
        except SystemExit as stop:  # argparse's --help; a library asking to exit
            return stop.code if isinstance(stop.code, int) else EXIT_OK if stop.code is None \
                else EXIT_USAGE
        except Exception as err:  # noqa: BLE001 (re-raised unless it is a known error)
            code = exit_code(err)
            if code is None:
                raise
            return code

    return door  # type: ignore[return-value]


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


# ---------------------------------------------------------------------------------------------
# Configs: --config FILE | FILE.py:ARG | NAME, then --config.a.b=VALUE overrides


def packaged_configs() -> dict[str, Callable[..., ml_collections.ConfigDict]]:
    """The configs shipped inside the package, by the name `--config NAME` takes."""
    from isnn_jax.configs import NAMED

    return NAMED


def _load_file(path: Path, args: Sequence[str]) -> Any:
    """Run a config file and return its get_config(*args); any failure is a ConfigError."""
    name = f"isnn_config_{path.stem}"
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"config file {path} is not a Python file; pass a .py file with "
                              "get_config()")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # as an import would: dataclasses and pickle look it up
        spec.loader.exec_module(module)
        if not callable(getattr(module, "get_config", None)):
            raise ConfigError(f"config file {path} has no get_config() function")
        return module.get_config(*args)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001: the user's file; its error is named, not hidden
        frames = [f for f in traceback.extract_tb(err.__traceback__)
                  if Path(f.filename).resolve() == path.resolve()]
        where = f" (line {frames[-1].lineno})" if frames else ""
        if isinstance(err, SyntaxError) and err.lineno:
            where = f" (line {err.lineno})"
        hint = ""
        if isinstance(err, ModuleNotFoundError) and err.name == "configs":
            hint = "; the shipped configs import as isnn_jax.configs.NAME from anywhere"
        raise ConfigError(f"config file {path} failed{where}: {type(err).__name__}: "
                          f"{err}{hint}") from None


def _call_named(named: dict[str, Callable[..., ml_collections.ConfigDict]], name: str,
                args: list[str]) -> Any:
    try:
        return named[name](*args)
    except TypeError as err:
        raise ConfigError(f"the packaged config {name} takes no argument ({err})") from None


def load_config(spec: str | None) -> ml_collections.ConfigDict:
    """The config `--config SPEC` names, locked (overrides cannot add fields).

    SPEC is a config file (`configs/fashion_mnist.py`, optionally `FILE.py:ARG` passed to
    get_config), or the name of a packaged config (`fashion_mnist`); None is the embedded
    default. `configs/NAME.py` of a checkout re-exports the packaged NAME, so outside the
    checkout that path falls back to the packaged config of the same name.
    """
    named = packaged_configs()
    if spec is None:
        config = named["default"]()
    else:
        path_text, _, arg = spec.partition(":") if not Path(spec).is_file() else (spec, "", "")
        args = [arg] if arg else []
        path = Path(path_text)
        if path.is_file():
            config = _load_file(path, args)
        elif path_text in named:
            config = _call_named(named, path_text, args)
        elif path.parent == Path("configs") and path.suffix == ".py" and path.stem in named:
            config = _call_named(named, path.stem, args)
        else:
            raise ConfigError(f"config file {path_text} not found; pass a config file or one of "
                              f"the packaged configs: {', '.join(named)}")
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"get_config() of {spec} returned {type(config).__name__}, not an "
                          "ml_collections.ConfigDict")
    config.lock()
    return config


def _parse_value(current: Any, raw: str) -> Any:
    """`raw` read as the type of the field's current value, as absl's config flags read it."""
    from absl import flags
    from ml_collections.config_flags.tuple_parser import TupleParser

    parsers = {bool: flags.BooleanParser(), int: flags.IntegerParser(),
               float: flags.FloatParser(), tuple: TupleParser()}
    kind = type(current)
    if kind is str:
        return raw
    if kind in parsers:
        return parsers[kind].parse(raw)
    try:  # None or another type: a Python literal, else the text itself
        return ast.literal_eval(raw)
    except (SyntaxError, ValueError):
        return raw


def _describe(value: Any) -> str:
    return {bool: "True or False", int: "an integer", float: "a number", str: "text",
            tuple: "a tuple such as (16, 32)"}.get(type(value), "a Python literal")


def _field(config: ml_collections.ConfigDict, dotted: str) -> tuple[Any, str, str]:
    """(parent node, field name, 'config.a.b') of an existing field; unknown names suggest one."""
    node, walked = config, "config"
    names = dotted.split(".")
    for index, name in enumerate(names):
        is_last = index == len(names) - 1
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            options = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(name, options, n=1)
            hint = f"; did you mean {walked}.{close[0]}?" if close else ""
            raise ConfigError(f"unknown config field {walked}.{name}{hint}")
        if is_last:
            return node, name, f"{walked}.{name}"
        node, walked = node[name], f"{walked}.{name}"
    raise ConfigError("an empty --config. override; write --config.FIELD=VALUE")


def apply_override(config: ml_collections.ConfigDict, dotted: str, raw: str) -> None:
    """Set config.<dotted> from the text `raw`; a bad value is a ConfigError naming the field,
    the value given and the type expected."""
    node, name, where = _field(config, dotted)
    current = node[name]
    if isinstance(current, ml_collections.ConfigDict):
        example = next(iter(current.keys()), "FIELD")
        raise ConfigError(f"{where} is a group of fields; set one of them, e.g. "
                          f"--{where}.{example}=VALUE")
    try:
        value = _parse_value(current, raw)
        node[name] = value
    except (ValueError, TypeError) as err:
        detail = f"; {str(err).splitlines()[0]}" if isinstance(current, tuple) and str(err) else ""
        raise ConfigError(f"--{where}={raw}: {where} takes {_describe(current)}, not {raw!r} "
                          f"(the config has {current!r}){detail}") from None


def _override_tokens(config: ml_collections.ConfigDict,
                     tokens: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Split argparse's leftovers into (field, raw value) overrides and other tokens.

    Forms, as absl's config flags take them: --config.a.b=V, --config.a.b V, and for a bool
    field --config.a.b (True) and --config.a.nob (False).
    """
    overrides, other = [], []
    position = 0
    while position < len(tokens):
        token = tokens[position]
        position += 1
        if not token.startswith("--config."):
            other.append(token)
            continue
        dotted, has_value, raw = token[len("--config."):].partition("=")
        if has_value:
            overrides.append((dotted, raw))
            continue
        parent, _, leaf = dotted.rpartition(".")
        negated = f"{parent}.{leaf[2:]}" if parent else leaf[2:]
        try:
            node, name, _ = _field(config, dotted)
            is_bool = isinstance(node[name], bool)
        except ConfigError:
            if leaf.startswith("no") and _is_bool_field(config, negated):
                overrides.append((negated, "false"))
                continue
            raise
        if is_bool:
            overrides.append((dotted, "true"))
        elif position < len(tokens):
            overrides.append((dotted, tokens[position]))
            position += 1
        else:
            raise UsageError(f"--config.{dotted} needs a value: --config.{dotted}=VALUE")
    return overrides, other


def _is_bool_field(config: ml_collections.ConfigDict, dotted: str) -> bool:
    try:
        node, name, _ = _field(config, dotted)
    except ConfigError:
        return False
    return isinstance(node[name], bool)


_CONFIG_HELP = """\
config: --config takes a config file (configs/fashion_mnist.py; FILE.py:ARG passes ARG to
get_config) or the name of a packaged config: {names}.
Without --config: the embedded digits config.
Override any field with --config.FIELD=VALUE, e.g. --config.train.epochs=3 or
--config.protect=False; an unknown field is named with the closest existing one."""


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """The --config flag (its --config.* overrides are read by `parse_with_config`)."""
    parser.add_argument("--config", metavar="FILE_OR_NAME",
                        help="config file with get_config(), or a packaged config name "
                             "(default: the embedded digits config)")
    epilog = _CONFIG_HELP.format(names=", ".join(packaged_configs()))
    parser.epilog = f"{parser.epilog}\n\n{epilog}" if parser.epilog else epilog


def parse_with_config(parser: argparse.ArgumentParser,
                      argv: Sequence[str] | None) -> tuple[argparse.Namespace,
                                                           ml_collections.ConfigDict]:
    """Parse `argv` (default sys.argv[1:]) into the flags and the overridden, locked config."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, leftover = parser.parse_known_args(argv)
    config = load_config(args.config)
    overrides, other = _override_tokens(config, leftover)
    if other:
        parser.error(f"unrecognized arguments: {' '.join(other)}")
    for dotted, raw in overrides:
        apply_override(config, dotted, raw)
    return args, config


# ---------------------------------------------------------------------------------------------
# Licences


def resolve_licence(config: ml_collections.ConfigDict, workdir: Path, licence_file: str | None,
                    issue_file: str | None) -> Any:
    """The Licence of a training run: --licence FILE, or a new one issued into --issue_licence
    NEW_FILE (one process only, never inside the workdir); None for an unprotected run."""
    import jax

    from isnn_jax.licence import Licence, LicenceError, check_licence_outside
    from isnn_jax.train import transform_spec

    if not config.protect:
        return None
    if licence_file and issue_file:
        raise LicenceError("pass either --licence (existing file) or --issue_licence (new file)")
    if licence_file:
        return Licence.load(licence_file)
    if not issue_file:
        raise LicenceError("a protected run needs --licence FILE (existing) or --issue_licence "
                           "NEW_FILE (issue a new licence there); keep it outside the workdir")
    if jax.process_count() > 1:
        raise LicenceError("--issue_licence cannot be used by several processes; issue the licence "
                           "once (python -m isnn_jax.licence ISSUE ...) or in a one-process run, "
                           "copy it to every worker and pass --licence FILE")
    path = Path(issue_file).absolute()
    check_licence_outside(workdir, path)
    licence = Licence.issue(config.licence.copyright, transform_spec(config))
    licence.save(path)
    log.info("issued licence %s into %s (mode 0600)", licence.fingerprint(), path)
    return licence


# ---------------------------------------------------------------------------------------------
# The training commands


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
    import jax

    from isnn_jax.train import initialize_distributed

    initialize_distributed(config)
    is_main = jax.process_index() == 0
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    output = run(args, config)
    if output and is_main:
        print(output)
    return EXIT_OK
