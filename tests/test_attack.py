"""The security evaluation on a tiny protected digits model: every attack, its known cases, the CLI."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from isnn_jax import api
from isnn_jax.attacks import (AttackSetupError, BudgetError, UnknownAttackError, apply_overrides,
                             evaluate_attacks, load_setting, quick_budgets, resolve_attacks)
from isnn_jax.attacks import (adapter, distillation, estimation, fine_tuning, key_guessing, near_key_guessing as near_keys,
                             partial_knowledge, pruning, unlock)
from isnn_jax.attack import main as attack_main
from isnn_jax.attacks.fit import fit, head_path, layer_mask, one_hot
from isnn_jax.attacks.measure import pattern_accuracies
from isnn_jax.attacks.report import check_no_secret, prepare_output
from isnn_jax.attacks.setting import Deadline, eval_subset, thief_data, train_subset
from isnn_jax.protection.licence import Licence, TransformSpec
from isnn_jax.protection.transforms import (additive_pattern, apply_transform, block_permutation,
                                           mixing_matrix)
from tiny_config import EPSILON, PROTECTED_LICENCE

LICENCE = PROTECTED_LICENCE
NO_LIMIT = 600.0


@pytest.fixture(scope="module")
def workdir(protected_run):
    """The session's tiny protected digits model (conftest.py): legal ~0.9, clean ~0.2."""
    return protected_run[0]


@pytest.fixture(scope="module")
def setting(attack_setting):
    """The attack setting; the protected model doubles as the 'baseline' to exercise that path."""
    return attack_setting


@pytest.fixture(scope="module")
def reference(workdir, setting):
    """Legal and clean accuracy on the test split, measured through the public API."""
    model = api.load_protected(workdir)
    images, labels = setting.test_images, setting.test_labels
    legal = float((model.predict(images, LICENCE) == labels).mean())
    clean = float((model.predict(images) == labels).mean())
    assert legal > clean + 0.3, (legal, clean)  # the model is protected, or nothing below means much
    return legal, clean


def budget(group: str, **fields):
    """The quick preset's group with some fields changed."""
    config = quick_budgets()[group]
    config.update(fields)
    return config


def deadline():
    return Deadline(NO_LIMIT)


def test_key_guessing_finds_the_true_licence_among_random_ones(setting, reference):
    result = key_guessing.run(setting, budget("key_guessing", guesses=40, screen_images=64,
                                              confirm_top=3), 0, deadline())
    legal, _ = reference
    assert result["guesses"] == 40 and not result["stopped_early"]
    assert sum(result["screen"]["histogram"]["counts"]) == 40
    assert result["control"]["found"] and result["control"]["screen_rank"] == 1
    assert result["control"]["accuracy"] == pytest.approx(legal, abs=1e-9)
    assert len(result["confirmed_top"]) == 3
    assert result["max_accuracy"] == max(result["confirmed_top"]) < legal


def test_key_guessing_stops_at_its_deadline_but_keeps_the_control(setting, monkeypatch):
    monkeypatch.setattr(key_guessing, "CHUNK_KEYS", 8)
    result = key_guessing.run(setting, budget("key_guessing", guesses=40, confirm_top=2), 0,
                              Deadline(0.0))
    assert result["stopped_early"] and result["guesses"] == 7  # one chunk: the control + 7 guesses
    assert result["control"]["found"]


@pytest.mark.slow
def test_near_keys_cover_every_class_and_the_unscaled_key_is_legal(setting, reference):
    result = near_keys.run(setting, budget("near_keys", per_class=2, screen_images=100,
                                           confirm_top=2, amplitude_scales=(1.0, 2.0)),
                           0, deadline())
    legal, _ = reference
    assert set(result["classes"]) >= {"secret_bit_flip", "substitution", "insertion", "deletion",
                                      "case", "whitespace", "lookalike"}
    assert result["near_licences"] == sum(c["count"] for c in result["classes"].values())
    scaled = {row["scale"]: row["accuracy"] for row in result["amplitude_scaled_true_key"]}
    assert scaled[1.0] == pytest.approx(legal, abs=1e-9)
    assert scaled[2.0] < legal
    assert [row["distribution"] for row in result["changed_parameters"]][-1] == "uniform"
    assert result["max_accuracy"] == max(row["accuracy"] for row in result["confirmed_top"])


@pytest.mark.slow
def test_fine_tuning_with_zero_steps_is_the_stolen_model_and_the_advantage_adds_up(setting,
                                                                                    reference):
    _, clean = reference
    zero = fine_tuning.run(setting, budget("fine_tuning", fractions=(0.1,), steps=0,
                                           modes=("all_layers", "last_layer")), 0, deadline())
    draw = zero["rows"][0]["draws"][0]
    assert draw["modes"]["all_layers"]["test_accuracy"] == pytest.approx(clean, abs=1e-9)
    assert draw["modes"]["last_layer"]["test_accuracy"] == pytest.approx(clean, abs=1e-9)
    modes = ("all_layers", "last_layer_reinit", "first_layer_reinit")
    trained = fine_tuning.run(setting, budget("fine_tuning", fractions=(0.1,), steps=30,
                                              evaluate_every=10, modes=modes,
                                              sweep=("adam:1e-3", "sgd:0.05")), 0, deadline())
    draw = trained["rows"][0]["draws"][0]
    assert draw["train_images"] + draw["validation_images"] == \
        round(0.1 * setting.train_images.shape[0])
    tested = {mode: r["test_accuracy"] for mode, r in draw["modes"].items()}
    for mode in modes:
        assert draw["advantage_by_mode"][mode] == pytest.approx(tested[mode] - tested["scratch"])
        result = draw["modes"][mode]
        # the chosen run is the sweep entry with the best validation accuracy, never the test's
        assert result["validation"] == max(r["best_validation"] for r in result["runs"].values())
        assert set(result["runs"]) == {"adam:0.001", "sgd:0.05"}
    assert draw["advantage"] == max(draw["advantage_by_mode"].values())
    assert draw["modes"]["scratch"]["curve"][0][0] == 0 and \
        draw["modes"]["scratch"]["curve"][-1][0] == 30
    # 116 + 29 clean images, 30 steps. Fine-tuned stolen weights: measured 0.82 (clean 0.2).
    # The sweep makes the from-scratch reference honest: SGD 0.05 reached 0.84 where Adam 1e-3
    # alone reached 0.66 (which once made the stolen weights look 16 points ahead).
    assert tested["all_layers"] > clean + 0.2
    assert tested["scratch"] > 0.75 and draw["modes"]["scratch"]["selected"] == "sgd:0.05"


def test_first_layer_reinit_replaces_exactly_what_reads_the_input(setting):
    target = setting.protected
    params, mask = fine_tuning.start_point(setting, "first_layer_reinit", 7)
    height, width, channels = target.image_shape
    readers = {name for name, sub in target.params.items() if "kernel" in sub and (
        (sub["kernel"].ndim == 4 and sub["kernel"].shape[2] == channels) or
        (sub["kernel"].ndim == 2 and sub["kernel"].shape[0] == height * width * channels))}
    assert readers  # the first convolution, and the tiny model's detector over raw pixels
    for name in target.params:
        same = jax.tree_util.tree_all(jax.tree_util.tree_map(
            lambda a, b: bool(np.array_equal(a, b)), target.params[name], params[name]))
        assert same == (name not in readers), name


@pytest.mark.slow
def test_last_layer_fine_tuning_moves_only_the_head(setting):
    target = setting.protected
    head = head_path(target.params, target.num_classes)
    assert head == ("Dense_2",)
    images, labels = train_subset(setting, 0.05, 0)
    tuned, steps = fit(target.module, target.params, images, one_hot(labels, target.num_classes),
                       steps=10, batch_size=16, learning_rate=1e-2, seed=0,
                       mask=layer_mask(target.params, {head}))
    assert steps == 10
    for name in target.params:
        same = jax.tree_util.tree_all(jax.tree_util.tree_map(
            lambda a, b: bool(np.array_equal(a, b)), target.params[name], tuned[name]))
        assert same == (name != head[0]), name


def test_the_head_is_found_at_any_depth_and_running_statistics_stay_frozen():
    """A user's model nests its head, and a stateful one's variables hold BatchNorm's running
    statistics beside the parameters: the thief trains parameters only."""
    leaf = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    variables = {"params": {"backbone": {"Dense_0": {"kernel": leaf(64, 32), "bias": leaf(32)},
                                         "BatchNorm_0": {"scale": leaf(32), "bias": leaf(32)}},
                            "head": {"kernel": leaf(32, 10), "bias": leaf(10)}},
                 "batch_stats": {"backbone": {"BatchNorm_0": {"mean": leaf(32),
                                                              "var": leaf(32)}}}}
    head = head_path(variables, 10)
    assert head == ("params", "head")
    mask = layer_mask(variables, {head})
    assert float(mask["params"]["head"]["kernel"]) == 1.0
    assert float(mask["params"]["backbone"]["Dense_0"]["kernel"]) == 0.0
    every = layer_mask(variables, None)
    assert float(every["params"]["backbone"]["BatchNorm_0"]["scale"]) == 1.0
    assert float(every["batch_stats"]["backbone"]["BatchNorm_0"]["var"]) == 0.0
    with pytest.raises(ValueError, match="no kernel with 7 outputs among"):
        head_path(variables, 7)


def test_pruning_zero_is_the_unpruned_model_and_sparsity_is_global(setting, reference):
    legal, clean = reference
    result = pruning.run(setting, budget("pruning", sparsities=(0.0, 0.5, 0.9)), 0, deadline())
    first, half, most = result["rows"]
    assert first["legal_accuracy"] == pytest.approx(legal, abs=1e-9)
    assert first["clean_accuracy"] == pytest.approx(clean, abs=1e-9)
    assert first["measured_sparsity"] < 0.01
    assert half["measured_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert most["measured_sparsity"] == pytest.approx(0.9, abs=0.01)
    assert "baseline_accuracy" in half
    assert most["legal_accuracy"] < legal


def test_the_true_pattern_unlocks_and_optimisation_finds_one(setting, reference):
    legal, clean = reference
    target, true = setting.protected, np.asarray(setting.true_pattern())
    images, labels = eval_subset(setting, 0)
    start, steps = unlock.universal_perturbation(target.module, target.params, images, labels,
                                                 bound=EPSILON, steps=0, batch_size=32,
                                                 learning_rate=0.01, seed=0, init=true)
    assert steps == 0
    assert pattern_accuracies(target, target.params, start[None], images, labels)[0] == \
        pytest.approx(legal, abs=1e-9)
    result = unlock.run(setting, budget("unlock_by_optimisation", fractions=(0.1,),
                                        bounds=("epsilon", "unbounded"), steps=50), 0, deadline())
    bounded, free = result["rows"]
    assert bounded["linf"] <= EPSILON + 1e-6 and free["linf"] <= 1.0
    # 144 clean labelled digits are enough to rebuild the licence (measured: 0.84 = legal).
    assert bounded["accuracy"] > clean + 0.3
    assert bounded["cosine_with_true_pattern"] > 0.5


def test_estimation_recovers_the_pattern_from_legal_inputs(setting, reference):
    legal, clean = reference
    # Known case: unclipped images and the exact clean mean give back the pattern itself.
    true = np.asarray(setting.true_pattern())
    mid = np.full((5, *true.shape), 0.5, np.float32) + np.linspace(-0.2, 0.2, 5)[:, None, None, None]
    legal_inputs = np.clip(mid + true, 0, 1)
    np.testing.assert_array_equal(estimation.estimate_pattern(legal_inputs, mid.mean(0), EPSILON),
                                  true)
    result = estimation.run(setting, budget("estimation", observed=(10, 100, 100000)), 0,
                            deadline())
    observed = [row["observed"] for row in result["rows"]]
    assert observed == [10, 100, setting.train_images.shape[0] // 2]  # capped at the pool
    most = result["rows"][-1]
    assert most["sign_agreement"] > 0.9
    assert most["accuracy"] > clean + 0.3


def test_partial_knowledge_at_cosine_one_is_the_licence(setting, reference):
    legal, clean = reference
    rng = np.random.default_rng(0)
    true = np.asarray(setting.true_pattern())
    flipped = partial_knowledge.flip_signs(true, 0.5, rng)
    assert unlock.cosine(flipped, true) == pytest.approx(0.5, abs=1 / true.size)
    result = partial_knowledge.run(setting, budget("partial_knowledge", cosines=(0.0, 1.0),
                                                   draws=2), 0, deadline())
    zero, one = result["rows"]
    assert one["accuracy"] == pytest.approx(legal, abs=1e-9)
    assert one["measured_cosine"] == pytest.approx(1.0)
    assert abs(zero["measured_cosine"]) < 0.1
    assert zero["accuracy"] < legal - 0.2


def test_partial_knowledge_of_a_mixing_runs_from_a_random_key_to_the_licence(setting):
    """For the mixing, cosine c is `c * legal + sqrt(1 - c^2) * other key`: c = 1 is the legal
    input, c = 0 a random key's input, and the measured cosine follows c."""
    mixed = dataclasses.replace(setting, licence=dataclasses.replace(
        setting.licence, transform=TransformSpec(kind="mix")))
    result = partial_knowledge.run(mixed, budget("partial_knowledge", cosines=(0.0, 0.6, 1.0),
                                                 draws=1), 0, deadline())
    zero, middle, one = result["rows"]
    images, labels = eval_subset(mixed, 0)
    spec = mixed.spec
    legal = apply_transform(spec, mixed.licence.key(), jnp.asarray(images))
    direct = float((mixed.protected.module.apply({"params": mixed.protected.params}, legal)
                    .argmax(-1) == labels).mean())
    assert one["accuracy"] == pytest.approx(direct, abs=1e-6)
    assert one["measured_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert middle["measured_cosine"] == pytest.approx(0.6, abs=0.05)
    assert abs(zero["measured_cosine"]) < 0.1
    other = apply_transform(spec, jax.random.split(jax.random.key(mixed.seed + 31), 1)[0],
                            jnp.asarray(images))
    assert zero["accuracy"] == pytest.approx(float((mixed.protected.module.apply(
        {"params": mixed.protected.params}, other).argmax(-1) == labels).mean()), abs=1e-6)


@pytest.mark.slow
def test_distillation_student_learns_only_through_the_licence(setting):
    queries = distillation.make_queries(setting.train_images[:100], 250, seed=0)
    assert queries.shape == (250, *setting.train_images.shape[1:])
    np.testing.assert_array_equal(queries[:100], setting.train_images[:100])
    result = distillation.run(setting, budget("distillation", query_multiples=(1,), steps=60),
                              0, deadline())
    rows = {row["teacher"]: row for row in result["rows"]}
    assert set(rows) == {"protected", "baseline", "protected_with_licence"}
    assert rows["protected"]["queries"] == setting.test_images.shape[0]
    # The control: the same pipeline distils a working student when queried through the licence.
    assert rows["protected_with_licence"]["student_accuracy"] > \
        rows["protected"]["student_accuracy"] + 0.15


def test_attack_names_and_budgets_are_checked():
    assert resolve_attacks("all")[0] == "parameter_reading" and len(resolve_attacks("all")) == 11
    assert resolve_attacks("pruning,estimation") == ["pruning", "estimation"]
    with pytest.raises(UnknownAttackError, match="did you mean pruning"):
        resolve_attacks("prunning")
    budgets = quick_budgets()
    apply_overrides(budgets, ["key_guessing.guesses=123", "fine_tuning.fractions=(0.2,)",
                              "pruning.max_seconds=5"])
    assert budgets.key_guessing.guesses == 123 and budgets.fine_tuning.fractions == (0.2,)
    assert budgets.pruning.max_seconds == 5.0
    with pytest.raises(BudgetError, match="did you mean key_guessing.guesses"):
        apply_overrides(budgets, ["key_guessing.guess=5"])
    with pytest.raises(BudgetError, match="whole number"):
        apply_overrides(budgets, ["key_guessing.guesses=1.5"])
    with pytest.raises(BudgetError, match="lacks '='"):
        apply_overrides(budgets, ["key_guessing.guesses"])


def test_setup_errors_name_the_problem(tmp_path, workdir):
    with pytest.raises(AttackSetupError, match="not a trained isnn_jax workdir"):
        load_setting(tmp_path / "missing", LICENCE)
    other = Licence(bytes(range(32)), LICENCE.copyright, LICENCE.transform)
    with pytest.raises(AttackSetupError, match="different model"):
        load_setting(workdir, other)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds other files"):
        prepare_output(tmp_path / "busy")


def test_secret_check_refuses_to_publish(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"oops": LICENCE.secret.hex()}))
    with pytest.raises(RuntimeError, match="secret"):
        check_no_secret(tmp_path, [LICENCE.secret])


@pytest.mark.slow
def test_command_writes_report_figures_and_no_secret(tmp_path, workdir, capsys):
    licence_file = LICENCE.save(tmp_path / "buyer.licence.json")
    out = tmp_path / "report"
    argv = ["--workdir", str(workdir), "--licence", str(licence_file), "--out", str(out),
            "--attacks", "pruning,partial_knowledge,estimation", "--preset", "quick",
            "--baseline_workdir", str(workdir), "--budget", "pruning.sparsities=(0.0,0.5)"]
    assert attack_main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["attacks_run"] == ["pruning", "partial_knowledge", "estimation"]
    assert report["model"]["licence_fingerprint"] == LICENCE.fingerprint()
    assert report["budgets"]["pruning"]["sparsities"] == [0.0, 0.5]
    assert set(report["figures"]) == {"pruning.png", "partial_knowledge.png", "estimation.png"}
    for name in report["figures"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| legal accuracy (true licence) |" in (out / "report.md").read_text()
    needles = [LICENCE.secret, LICENCE.secret.hex().encode(), LICENCE.key_bytes()[:8],
               LICENCE.key_bytes().hex().encode()]
    for path in out.iterdir():
        assert not any(needle in path.read_bytes() for needle in needles), path
    assert LICENCE.secret.hex() not in capsys.readouterr().out
    # A second run replaces the report whole; no staging folders are left beside it.
    assert attack_main(argv[:-2] + ["--no_figures"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buyer.licence.json", "report"]


def test_command_errors_exit_2_with_the_fix(tmp_path, workdir, capsys):
    licence_file = LICENCE.save(tmp_path / "buyer.licence.json")
    base = ["--licence", str(licence_file), "--out", str(tmp_path / "r")]
    assert attack_main(["--workdir", str(workdir), "--attacks", "keyguess"] + base) == 2
    assert "unknown attack 'keyguess'" in capsys.readouterr().err
    assert attack_main(["--workdir", str(tmp_path / "nope")] + base) == 2
    assert "not a trained isnn_jax workdir" in capsys.readouterr().err
    assert attack_main(["--workdir", str(workdir), "--budget", "pruning.nope=1"] + base) == 2
    assert "unknown budget field" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_evaluate_attacks_records_a_failed_attack_and_keeps_the_rest(setting, monkeypatch):
    def broken(*args):
        raise RuntimeError("boom")

    from isnn_jax.attacks import suite

    monkeypatch.setitem(suite.ATTACKS, "pruning", broken)
    budgets = quick_budgets()
    budgets.partial_knowledge.update(cosines=(1.0,), draws=1)
    report = evaluate_attacks(dataclasses.replace(setting, baseline=None),
                              ["pruning", "partial_knowledge"], budgets)
    assert report["attacks"]["pruning"]["error"] == "RuntimeError: boom"
    assert report["attacks"]["partial_knowledge"]["rows"][0]["accuracy"] == \
        pytest.approx(report["reference"]["legal_accuracy"], abs=1e-9)
    assert "baseline_accuracy" not in report["reference"]


# ---------------------------------------------------------------------------------------------
# The input adapter: started at the true key it is the legal transform; trained from the
# identity on the thief's images it learns a working one for an additive key.


@pytest.mark.parametrize("kind", adapter.KINDS)
def test_adapter_at_the_true_key_is_the_legal_transform(kind):
    spec = TransformSpec(kind="shuffle_additive", epsilon=0.1, block_size=4)
    licence = Licence.issue("(c) Seller; licensed to Buyer; licence 3", spec)
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(5, 8, 12, 1)), jnp.float32)
    start = adapter.initial_adapter(kind, (8, 12, 1), 4,
                                    permutation=np.asarray(block_permutation(licence.key(), 4, 1)),
                                    offset=np.asarray(additive_pattern(licence.key(), (8, 12, 1),
                                                                       spec)))
    np.testing.assert_allclose(adapter.adapt(start, images, 4),
                               apply_transform(spec, licence.key(), images), atol=1e-6)
    identity = adapter.initial_adapter(kind, (8, 12, 1), 4)
    np.testing.assert_array_equal(adapter.adapt(identity, images, 4), images)


@pytest.mark.slow
def test_adapter_keeps_the_legal_accuracy_at_the_true_pattern_and_learns_one(setting):
    setting = setting
    images, labels = eval_subset(setting, 0)
    key, spec = setting.licence.key(), setting.spec
    block = spec.block_size
    legal = setting.protected.predict(np.asarray(apply_transform(spec, key, jnp.asarray(images))))
    truth = adapter.initial_adapter("shared", setting.protected.image_shape, block,
                                    offset=np.asarray(setting.true_pattern()))
    assert adapter.adapted_accuracy(setting, truth, images, labels, block) == \
        pytest.approx(float((legal == labels).mean()), abs=1e-9)
    identity = adapter.initial_adapter("shared", setting.protected.image_shape, block)
    clean = adapter.adapted_accuracy(setting, identity, images, labels, block)
    data = thief_data(setting, 0.2, 0, 0.2)
    trained, record = adapter.train_adapter(setting, identity, data, block_size=block, steps=60,
                                            batch_size=32, learning_rate=1e-2, evaluate_every=20,
                                            seed=0)
    assert record["curve"][0] == (0, record["curve"][0][1]) and record["steps"] == 60
    assert record["best_validation"] == max(acc for _, acc in record["curve"])
    assert not jax.tree_util.tree_all(jax.tree_util.tree_map(
        lambda a, b: bool(np.array_equal(a, b)), trained, identity))
    # The tiny model's key is an additive pattern: an offset learned from 290 clean images
    # unlocks it well above its clean accuracy (measured: clean ~0.2, adapted ~0.8).
    assert adapter.adapted_accuracy(setting, trained, images, labels, block) > clean + 0.3


@pytest.mark.slow
def test_adapter_attack_reports_every_draw_and_kind(setting):
    budget = quick_budgets().input_adapter
    budget.update(kinds=("per_position",), steps=10, evaluate_every=10)
    result = adapter.run(setting, budget, 100, Deadline(600.0))
    assert [(r["fraction"], r["kind"]) for r in result["rows"]] == [(0.1, "per_position")]
    for row in result["rows"]:
        assert row["validation"] == max(r["best_validation"] for r in row["runs"].values())
        assert 0.0 <= row["accuracy"] <= 1.0
    assert result["block_size"] == setting.spec.block_size


# ---------------------------------------------------------------------------------------------
# The whole-image mixing: the adapter at the true Q is the legal transform; the eavesdropper's
# covariance alignment finds Q where the statistics pin it down.


@pytest.mark.parametrize("kind,finish", [("mix", "none"), ("mix_sphere", "sphere")])
def test_whole_image_adapter_at_the_true_mixing_is_the_legal_transform(kind, finish):
    spec = TransformSpec(kind=kind)
    key = Licence.issue("(c) Seller; licensed to Buyer; licence 4", spec).key()
    block, clip, kinds = adapter.adapter_geometry(spec, (8, 8, 1), 0, adapter.KINDS)
    assert (block, clip, kinds) == (8, finish, ("shared",))
    start = adapter.linear_adapter(np.asarray(mixing_matrix(key, (8, 8, 1))), (8, 8, 1))
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(5, 8, 8, 1)), jnp.float32)
    np.testing.assert_allclose(adapter.adapt(start, images, block, clip),
                               apply_transform(spec, key, images), atol=1e-5)
    with pytest.raises(ValueError, match="square images"):
        adapter.adapter_geometry(spec, (8, 12, 1), 0, adapter.KINDS)


def test_covariance_alignment_recovers_a_mixing_the_statistics_pin_down():
    spec = TransformSpec(kind="mix")
    key = Licence.issue("(c) Seller; licensed to Buyer; licence 5", spec).key()
    rng = np.random.default_rng(0)
    # Distinct variances and a mean away from 1/2 on every axis: Q is identifiable.
    scales, mean = np.linspace(0.05, 0.3, 16), rng.uniform(0.55, 0.7, 16)
    clean = (mean + scales * rng.standard_normal((20000, 16))).astype(np.float32)
    observed = (mean + scales * rng.standard_normal((20000, 16))).astype(np.float32)
    legal = np.asarray(apply_transform(spec, key, jnp.asarray(observed.reshape(-1, 4, 4, 1))))
    q = np.asarray(mixing_matrix(key, (4, 4, 1)))
    estimates = estimation.estimate_mixing(legal.reshape(len(legal), -1), clean)
    assert np.trace(estimates["mean"].T @ q) / 16 > 0.95
    # With few observations the eigenvectors are noise and the estimate is far from Q.
    few = estimation.estimate_mixing(legal[:10].reshape(10, -1), clean)
    assert np.trace(few["mean"].T @ q) / 16 < 0.5
    # The same statistics under mix_sphere: the clean images scaled to its norm first.
    sphere = TransformSpec(kind="mix_sphere")
    legal = np.asarray(apply_transform(sphere, key, jnp.asarray(observed.reshape(-1, 4, 4, 1))))
    assert np.allclose(np.linalg.norm(legal.reshape(len(legal), -1), axis=1), 2.0, atol=1e-4)
    estimates = estimation.estimate_mixing(legal.reshape(len(legal), -1), clean, sphere=True)
    assert np.trace(estimates["mean"].T @ q) / 16 > 0.9


@pytest.mark.parametrize("finish,words", [("clip", "clipped to [0, 1]"), ("none", "unclipped"),
                                          ("sphere", "scaled to the mixing's norm")])
def test_the_adapter_section_names_what_follows_the_map(finish, words):
    from isnn_jax.attacks.markdown import _section

    result = {"rows": [], "block_size": 28, "finish": finish, "steps": 10, "seconds": 1.0}
    text = "\n".join(_section("input_adapter", result))
    assert f"every 28x28 block plus a free offset, {words}, in front" in text
