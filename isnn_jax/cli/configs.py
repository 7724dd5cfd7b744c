"""`--config FILE | FILE.py:ARG | NAME` and `--config.a.b=VALUE` overrides, as absl's config
flags read them, with every mistake worded as a ConfigError that names the field and the fix."""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ml_collections
from absl import flags
from ml_collections.config_flags.tuple_parser import TupleParser

from isnn_jax.cli.doors import UsageError
from isnn_jax.configs import NAMED
from isnn_jax.training.config import FREE_FORM, ConfigError


def packaged_configs() -> dict[str, Callable[..., ml_collections.ConfigDict]]:
    """The configs shipped inside the package, by the name `--config NAME` takes."""
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
        if is_last and walked in FREE_FORM and isinstance(node, ml_collections.ConfigDict):
            return node, name, f"{walked}.{name}"  # a free-form group takes any new field
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
    current = node.get(name)
    if isinstance(current, ml_collections.ConfigDict):
        example = next(iter(current.keys()), "FIELD")
        raise ConfigError(f"{where} is a group of fields; set one of them, e.g. "
                          f"--{where}.{example}=VALUE")
    try:
        value = _parse_value(current, raw)
        with node.unlocked():  # only a free-form group can gain a field (_field checks)
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
            is_bool = isinstance(node.get(name), bool)
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
    return isinstance(node.get(name), bool)


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
