"""Budgets of the security evaluation: how much data, how many steps and queries, how long.

Every attack reads only its own group. `default_budgets()` is what the command runs unless told
otherwise (about 20 minutes on 2 CPU cores for the Fashion-MNIST small CNN); `quick_budgets()`
is a smoke-test size. Override one field with `--budget GROUP.FIELD=VALUE`.
"""

from __future__ import annotations

import ast
import difflib

import ml_collections

from isnn_jax.attacks.fine_tuning import MODES
from isnn_jax.attacks.fit import OPTIMIZERS

ATTACK_NAMES = ("parameter_reading", "key_guessing", "near_keys", "fine_tuning", "pruning", "unlock_by_optimisation",
                "permutation_unlock", "input_adapter",
                "estimation", "partial_knowledge", "distillation")


class BudgetError(ValueError):
    """A budget field is unknown or has an unusable value; the message names the fix."""


def default_budgets() -> ml_collections.ConfigDict:
    """The budgets of a full run (the numbers in docs/security.md come from these)."""
    budgets = ml_collections.ConfigDict()
    budgets.seed = 0
    budgets.eval_images = 10000  # test images each accuracy is measured on (0: the whole split)

    read = budgets.parameter_reading = ml_collections.ConfigDict()  # zero data: the weights alone
    read.columns = 16  # largest columns of a dense kernel over the flattened input, each tried
    read.components = 3  # its leading singular vectors, each tried
    read.report_top = 5
    read.max_seconds = 120.0

    key = budgets.key_guessing = ml_collections.ConfigDict()
    key.guesses = 10000  # random licences guessed; the true licence is added as a control
    key.screen_images = 64  # test images every guess is screened on
    key.confirm_top = 10  # best guesses re-measured on eval_images (removes the screen's luck)
    key.max_seconds = 600.0

    near = budgets.near_keys = ml_collections.ConfigDict()
    near.per_class = 0  # near licences per class (0: every one: 256 bit flips, every text edit)
    near.screen_images = 200
    near.confirm_top = 10
    near.amplitude_scales = (0.5, 0.75, 0.9, 1.1, 1.25, 1.5, 2.0)  # the true key's pattern, rescaled
    near.max_seconds = 300.0

    tune = budgets.fine_tuning = ml_collections.ConfigDict()
    tune.fractions = (0.01, 0.05, 0.1)  # of the clean labelled training split
    tune.seeds = 3  # draws of the thief's data (and initialisations) per fraction
    tune.modes = MODES  # start points besides training from scratch
    tune.sweep = ("adam:1e-3", "adam:3e-4", "sgd:0.05", "sgd:0.01")  # optimiser:learning rate
    tune.steps = 1000
    tune.evaluate_every = 100  # validation accuracy measured this often (model selection)
    tune.validation = 0.2  # share of the thief's images held out for model selection
    tune.batch_size = 64
    tune.max_seconds = 3600.0

    prune = budgets.pruning = ml_collections.ConfigDict()
    prune.sparsities = tuple(round(0.1 * i, 1) for i in range(10))  # 0% to 90%
    prune.max_seconds = 180.0

    unlock = budgets.unlock_by_optimisation = ml_collections.ConfigDict()
    unlock.fractions = (0.01, 0.1)
    unlock.bounds = ("epsilon", "unbounded")  # L-inf bound of the learned perturbation
    unlock.steps = 200
    unlock.batch_size = 64
    unlock.learning_rate = 0.01  # Adam; the bounded run scales it by epsilon / 0.1
    unlock.restarts = 2  # seeds per run; the best on the thief's own data is kept
    unlock.max_seconds = 300.0

    permute = budgets.permutation_unlock = ml_collections.ConfigDict()  # shuffle transforms only
    permute.fractions = (0.01, 0.1)
    permute.steps = 600
    permute.batch_size = 64
    permute.learning_rate = 0.05  # Adam on the Sinkhorn logits (and the pattern's tanh input)
    permute.restarts = 2
    permute.max_seconds = 600.0

    adapter = budgets.input_adapter = ml_collections.ConfigDict()
    adapter.fractions = (0.01, 0.05, 0.1)  # the same draws as fine_tuning (same seeds)
    adapter.seeds = 3
    adapter.kinds = ("shared", "per_position")  # one block map for all blocks, or one per block
    adapter.block_size = 0  # 0: the transform's block size
    adapter.learning_rates = (1e-2, 1e-3)  # Adam
    adapter.steps = 1000
    adapter.evaluate_every = 100
    adapter.validation = 0.2
    adapter.batch_size = 64
    adapter.max_seconds = 1800.0

    estimate = budgets.estimation = ml_collections.ConfigDict()
    estimate.observed = (10, 30, 100, 300, 1000, 3000, 10000)  # legal inputs the eavesdropper sees
    estimate.max_seconds = 120.0

    partial = budgets.partial_knowledge = ml_collections.ConfigDict()
    partial.cosines = tuple(round(0.1 * i, 1) for i in range(11))  # 0.0 to 1.0
    partial.draws = 2  # random sign-flip sets per cosine
    partial.max_seconds = 120.0

    distil = budgets.distillation = ml_collections.ConfigDict()
    distil.query_multiples = (1, 10)  # queries = multiple x test-split size
    distil.steps = 400
    distil.batch_size = 64
    distil.learning_rate = 1e-3
    distil.max_seconds = 900.0
    return budgets


def quick_budgets() -> ml_collections.ConfigDict:
    """A smoke-test size: every attack runs, in seconds, with numbers too noisy to quote."""
    budgets = default_budgets()
    budgets.eval_images = 1000
    budgets.key_guessing.update(guesses=200, screen_images=64, confirm_top=3)
    budgets.near_keys.update(per_class=8, screen_images=200, confirm_top=3,
                             amplitude_scales=(0.5, 2.0))
    budgets.fine_tuning.update(fractions=(0.01, 0.1), steps=40, evaluate_every=20, seeds=1,
                               sweep=("adam:1e-3",),
                               modes=("all_layers", "last_layer_reinit", "first_layer_reinit"))
    budgets.pruning.sparsities = (0.0, 0.5, 0.9)
    budgets.unlock_by_optimisation.update(fractions=(0.1,), steps=40, restarts=1)
    budgets.permutation_unlock.update(fractions=(0.1,), steps=60, restarts=1)
    budgets.input_adapter.update(fractions=(0.1,), seeds=1, kinds=("shared",),
                                 learning_rates=(1e-2,), steps=40, evaluate_every=20)
    budgets.estimation.observed = (10, 100, 1000)
    budgets.partial_knowledge.update(cosines=(0.0, 0.5, 1.0), draws=1)
    budgets.distillation.update(query_multiples=(1,), steps=40)
    return budgets


PRESETS = {"default": default_budgets, "quick": quick_budgets}


def _coerce(text: str, current: object, path: str) -> object:
    """`text` parsed as a Python literal of the field's current type."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(current, tuple):
        return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if isinstance(current, str):
        return str(value)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(current, bool) or not isinstance(current, (int, float)):
        return value
    if isinstance(current, int) and not (isinstance(value, int) and is_number):
        raise BudgetError(f"{path} must be a whole number, got {text!r}")
    if not is_number:
        raise BudgetError(f"{path} must be a number, got {text!r}")
    return type(current)(value)


def apply_overrides(budgets: ml_collections.ConfigDict, overrides: list[str]) -> None:
    """Apply `GROUP.FIELD=VALUE` overrides in place; unknown fields are errors with a suggestion."""
    for item in overrides:
        path, sep, text = item.partition("=")
        if not sep:
            raise BudgetError(f"budget override {item!r} lacks '='; write GROUP.FIELD=VALUE, "
                              "e.g. key_guessing.guesses=1000")
        node, names = budgets, path.strip().split(".")
        for depth, name in enumerate(names):
            if not isinstance(node, ml_collections.ConfigDict) or name not in node:
                options = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                close = difflib.get_close_matches(name, options, n=1)
                hint = f"; did you mean {'.'.join(names[:depth] + close)}?" if close else ""
                raise BudgetError(f"unknown budget field {path!r}{hint}")
            if depth < len(names) - 1:
                node = node[name]
        last = names[-1]
        if isinstance(node[last], ml_collections.ConfigDict):
            raise BudgetError(f"{path} is a group; set one of its fields: "
                              f"{', '.join(f'{path}.{k}' for k in node[last].keys())}")
        node[last] = _coerce(text.strip(), node[last], path)


def check_budgets(budgets: ml_collections.ConfigDict) -> None:
    """Reject budgets that cannot run (fractions outside (0, 1], non-positive counts)."""
    def fail(message: str) -> None:
        raise BudgetError(message)

    for name in ("fine_tuning", "unlock_by_optimisation", "permutation_unlock", "input_adapter"):
        for fraction in budgets[name].fractions:
            if not 0.0 < float(fraction) <= 1.0:
                fail(f"{name}.fractions must lie in (0, 1], got {fraction}")
    for sparsity in budgets.pruning.sparsities:
        if not 0.0 <= float(sparsity) < 1.0:
            fail(f"pruning.sparsities must lie in [0, 1), got {sparsity}")
    for cosine in budgets.partial_knowledge.cosines:
        if not 0.0 <= float(cosine) <= 1.0:
            fail(f"partial_knowledge.cosines must lie in [0, 1], got {cosine}")
    for scale in budgets.near_keys.amplitude_scales:
        if not 0.0 < float(scale) <= 10.0:
            fail(f"near_keys.amplitude_scales must lie in (0, 10], got {scale}")
    for bound in budgets.unlock_by_optimisation.bounds:
        if bound not in ("epsilon", "unbounded"):
            fail("unlock_by_optimisation.bounds entries must be 'epsilon' or 'unbounded', "
                 f"got {bound!r}")
    for mode in budgets.fine_tuning.modes:
        if mode not in MODES:
            fail(f"unknown fine_tuning mode {mode!r}; choose from {', '.join(MODES)}")
    for entry in budgets.fine_tuning.sweep:
        name, _, rate = str(entry).partition(":")
        try:
            good = name in OPTIMIZERS and float(rate) > 0
        except ValueError:
            good = False
        if not good:
            fail(f"fine_tuning.sweep entry {entry!r} is not OPTIMISER:LEARNING_RATE with an "
                 f"optimiser of {', '.join(OPTIMIZERS)} and a positive rate, e.g. 'adam:1e-3'")
    if not 0.0 < float(budgets.fine_tuning.validation) < 1.0:
        fail("fine_tuning.validation must lie in (0, 1)")
    positive = [("parameter_reading", "report_top"), ("key_guessing", "guesses"), ("key_guessing", "screen_images"),
                ("near_keys", "screen_images"), ("fine_tuning", "batch_size"),
                ("fine_tuning", "seeds"), ("fine_tuning", "evaluate_every"),
                ("input_adapter", "seeds"), ("input_adapter", "batch_size"),
                ("input_adapter", "evaluate_every"),
                ("unlock_by_optimisation", "batch_size"), ("unlock_by_optimisation", "restarts"),
                ("permutation_unlock", "batch_size"), ("permutation_unlock", "restarts"),
                ("partial_knowledge", "draws"),
                ("distillation", "batch_size")]
    for group, field in positive:
        if int(budgets[group][field]) < 1:
            fail(f"{group}.{field} must be at least 1, got {budgets[group][field]}")
    for group in ATTACK_NAMES:
        if float(budgets[group].max_seconds) <= 0:
            fail(f"{group}.max_seconds must be positive")
    if int(budgets.eval_images) < 0:
        fail("eval_images must be >= 0 (0: the whole test split)")
