"""Your own model, named by an import path: `package.module:factory` or `path/to/file.py:factory`.

The factory is a Flax linen Module class, a function returning a linen Module, or a `flax.nnx`
Module class (run through `nnx.bridge.ToLinen`, with `.train()` / `.eval()` set per call). Its
constructor arguments are `config.model.kwargs`; `num_classes` is passed too when the factory
takes it. The result is always a `StatefulModel`, so BatchNorm statistics and dropout work the
same way for every imported model (models/stateful.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import flax.linen as nn
from flax import nnx
from flax.core import FrozenDict
from flax.nnx import bridge

from isnn_jax.models.stateful import StatefulModel, detect_train_flag


class ModelImportError(ValueError):
    """An import-path model cannot be found or built; the message names the fix."""


def is_import_path(name: str) -> bool:
    """Whether `config.model.name` names a user's factory rather than a built-in model."""
    return ":" in name


def _load_module(target: str, name: str) -> Any:
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ModelImportError(f"model file {target} named by config.model.name={name!r} "
                                   "does not exist; give its path (absolute, or relative to the "
                                   "directory you run from)")
        module_name = f"isnn_user_model_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickle look classes up here
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001: the user's file; its error is named
            raise ModelImportError(f"model file {target} failed to import: "
                                   f"{type(err).__name__}: {err}") from None
        return module
    try:
        return importlib.import_module(target)
    except ImportError as err:
        raise ModelImportError(
            f"cannot import {target!r} named by config.model.name={name!r} "
            f"({type(err).__name__}: {err}); run from the directory holding it, put that "
            "directory on PYTHONPATH, or name the file: path/to/file.py:FACTORY") from None


def load_factory(name: str) -> Any:
    """The object an import path `target:attribute` names (a dotted attribute is followed)."""
    target, _, attribute = name.rpartition(":")
    if not target or not attribute:
        raise ModelImportError(f"config.model.name={name!r} is not an import path; write "
                               "package.module:FACTORY or path/to/file.py:FACTORY")
    obj = _load_module(target, name)
    for part in attribute.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_"))[:12]
            raise ModelImportError(f"{target} has no attribute {attribute!r} (config.model.name="
                                   f"{name!r}); it defines: {', '.join(public)}")
        obj = getattr(obj, part)
    return obj


class NnxClassifier(nn.Module):
    """A `flax.nnx` Module class as a linen module: built from `kwargs`, switched with `train`."""

    nnx_class: Callable[..., nnx.Module]
    kwargs: FrozenDict = FrozenDict({})

    @nn.compact
    def __call__(self, images: Any, train: bool = False) -> Any:
        def run(module: nnx.Module, x: Any) -> Any:
            module.train() if train else module.eval()
            return module(x)

        return bridge.ToLinen(self.nnx_class, kwargs=self.kwargs, name="nnx")(images,
                                                                                nnx_method=run)


def _takes(factory: Any, argument: str) -> bool:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return argument in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _hashable(value: Any) -> Any:
    """Lists (from JSON metadata or the command line) as tuples: modules must be hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, Mapping):
        return FrozenDict({k: _hashable(v) for k, v in value.items()})
    return value


def build_imported(name: str, kwargs: Mapping[str, Any], num_classes: int,
                   train_flag: str = "auto") -> StatefulModel:
    """The model `name` names, built with `kwargs` (and num_classes where the factory takes it)."""
    factory = load_factory(name)
    arguments = {k: _hashable(v) for k, v in dict(kwargs).items()}
    is_nnx = inspect.isclass(factory) and issubclass(factory, nnx.Module)
    if _takes(factory, "num_classes") and "num_classes" not in arguments:
        arguments["num_classes"] = int(num_classes)
    if is_nnx:
        module = NnxClassifier(factory, FrozenDict(arguments))
    else:
        if isinstance(factory, nn.Module):
            if arguments and set(arguments) != {"num_classes"}:
                raise ModelImportError(f"{name} is a module instance; it takes no "
                                       "config.model.kwargs (name its class instead)")
            module = factory
        elif callable(factory):
            try:
                module = factory(**arguments)
            except TypeError as err:
                raise ModelImportError(f"{name}(**config.model.kwargs) failed: {err}; set the "
                                       "arguments it takes with --config.model.kwargs.NAME=VALUE"
                                       ) from None
        else:
            raise ModelImportError(f"{name} is a {type(factory).__name__}, not a Flax module "
                                   "class or a function returning one")
        if not isinstance(module, nn.Module):
            raise ModelImportError(f"{name} returned a {type(module).__name__}, not a flax.linen "
                                   "Module (an nnx Module must be named by its class)")
    flag = detect_train_flag(module) if train_flag == "auto" else train_flag
    try:
        return StatefulModel(module, flag)
    except ValueError as err:
        raise ModelImportError(str(err)) from None
