"""The seller and buyer workflow end to end on tiny digits models: registry, per-buyer protection,
prediction from image files, export, ownership verification and leak tracing."""

import hashlib
import dataclasses
import json
import os
import shutil
import stat
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from isnn_jax import api
from isnn_jax.protection import licence as licence_module
from isnn_jax.runtime.black_box import command_classifier, model_classifier
from isnn_jax.data import load_split, to_float
from isnn_jax.base.files import write_atomic
from isnn_jax.runtime.export import export_bytes, export_workdir, load_export
from isnn_jax.runtime.images import ImageError, read_inputs
from isnn_jax.seller.leak import fine_tune, prune
from isnn_jax.protection.licence import Licence, LicenceError
from isnn_jax.licence import main as licence_cli
from isnn_jax.runtime.fingerprint import model_fingerprint
from isnn_jax.predict import main as predict_cli
from isnn_jax.seller.buyers import protect_for_buyer
from isnn_jax.seller.registry import DB_FILE, RevokedLicenceError, open_registry
from isnn_jax.evaluation.stats import binomial_test, log_binomial_tail, paired_test
from isnn_jax.trace import main as trace_cli
from isnn_jax.seller.trace import trace_licences
from isnn_jax.verify import main as verify_cli
from isnn_jax.seller.verify import ownership_test, verification_set
from tiny_config import tiny_config

pytestmark = pytest.mark.slow  # trains its own models: the full run only

BUYERS = ("alpha-labs", "beta-corp", "gamma-gmbh")
LEAKER = "beta-corp"
EPSILON = 0.1  # 8x8 digits need a stronger pattern than 28x28 images


def workflow_config(data_dir):
    """The tests' tiny digits config for 15 epochs (~8 s each); protect sets the transform."""
    config = tiny_config(data_dir, epochs=15, log_every_steps=100, checkpoint_every_steps=1000)
    config.eval.random_licences = 0
    config.eval.near_per_class = 1
    return config


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """Three buyers, each with a licence from the registry and a model protected for it."""
    root = tmp_path_factory.mktemp("shop")
    data_dir = str(root / "tfds")
    registry = root / "seller" / "registry"
    reports = {}
    for number, buyer in enumerate(BUYERS):
        # Fixed secrets keep the tiny models (and so the measured numbers) reproducible.
        secret = hashlib.sha256(f"test secret {number}".encode()).digest()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(licence_module._secrets, "token_bytes", lambda size: secret[:size])
            assert licence_cli(["issue", "--registry", str(registry), "--buyer", buyer,
                                "--copyright", f"(c) Seller Ltd; licensed to {buyer}; licence "
                                f"{number}", "--out", str(root / f"{buyer}.licence.json"),
                                "--epsilon", str(EPSILON)]) == 0
        reports[buyer] = protect_for_buyer(registry, buyer, workflow_config(data_dir),
                                           root / buyer)
    yield {"root": root, "registry": registry, "data_dir": data_dir, "reports": reports,
           "workdir": {buyer: root / buyer for buyer in BUYERS},
           "licence_file": {buyer: root / f"{buyer}.licence.json" for buyer in BUYERS}}


@pytest.fixture(scope="module")
def digits(shop):
    """The verification set (the 360 digits test images) and some clean training images."""
    images, labels = verification_set("digits", num_images=0, data_dir=shop["data_dir"])
    train_images, train_labels = load_split("digits", "train", data_dir=shop["data_dir"])
    return images, labels, to_float(train_images), train_labels.astype(np.int32)


def candidates(shop):
    with open_registry(shop["registry"]) as registry:
        return list(registry.licences())


def test_binomial_and_sign_tests_are_exact():
    # P[Bin(10, 0.5) >= 8] = (45 + 10 + 1) / 1024
    assert binomial_test(8, 10, 0.5)["p_value"] == pytest.approx(56 / 1024, rel=1e-12)
    assert log_binomial_tail(0, 10, 0.3) == 0.0
    assert binomial_test(2000, 2000, 0.1)["log10_p_value"] == pytest.approx(-2000, rel=1e-12)
    test = paired_test(np.array([1, 1, 1, 0, 1], bool), np.array([0, 0, 1, 1, 1], bool))
    assert (test["wins"], test["losses"]) == (2, 1)
    assert test["p_value"] == pytest.approx(0.5)


def test_each_buyer_gets_a_protected_model_recorded_in_the_registry(shop, capsys):
    for buyer, report in shop["reports"].items():
        # Measured: legal 0.89-0.95, clean 0.10-0.16 (chance is 0.10) after 15 epochs.
        assert report["legal_accuracy"] > 0.85, (buyer, report)
        assert report["clean_accuracy"] < 0.3, (buyer, report)
    assert licence_cli(["list", "--registry", str(shop["registry"]), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [entry["buyer"] for entry in listed] == list(BUYERS)
    assert all(entry["status"] == "active" and len(entry["models"]) == 1 for entry in listed)
    for entry in listed:
        workdir = shop["workdir"][entry["buyer"]]
        fingerprint = model_fingerprint(api.load_protected(workdir).params)
        assert entry["models"][0]["model_fingerprint"] == fingerprint
        assert entry["models"][0]["workdir"] == str(workdir.absolute())
        assert entry["licence_id"] == Licence.load(shop["licence_file"][entry["buyer"]]).fingerprint()
    assert len({entry["models"][0]["model_fingerprint"] for entry in listed}) == 3


def test_secrets_live_only_in_the_registry_and_licence_files(shop, capsys):
    registry = shop["registry"]
    assert stat.S_IMODE(registry.stat().st_mode) == 0o700
    assert stat.S_IMODE((registry / DB_FILE).stat().st_mode) == 0o600
    licence = Licence.load(shop["licence_file"][LEAKER])
    assert stat.S_IMODE(shop["licence_file"][LEAKER].stat().st_mode) == 0o600
    assert licence.secret.hex().encode() in (registry / DB_FILE).read_bytes()
    assert licence_cli(["list", "--registry", str(registry)]) == 0
    assert licence_cli(["show", "--registry", str(registry), "--buyer", LEAKER]) == 0
    shown = capsys.readouterr().out
    assert LEAKER in shown and licence.fingerprint() in shown
    assert licence.secret.hex() not in shown
    assert licence_cli(["show", "--registry", str(registry), "--buyer", LEAKER,
                        "--reveal-secret"]) == 0
    assert json.loads(capsys.readouterr().out)["secret"] == licence.secret.hex()
    export = shop["root"] / "leaker.isnn"
    export_workdir(shop["workdir"][LEAKER], export)
    needles = [licence.secret, licence.secret.hex().encode(), licence.key_bytes()[:8]]
    files = [export, *(p for p in shop["workdir"][LEAKER].rglob("*") if p.is_file())]
    for path in files:
        content = path.read_bytes()
        assert not any(needle in content for needle in needles), path


def test_registry_refuses_a_second_active_licence_and_open_permissions(shop, tmp_path, capsys):
    assert licence_cli(["issue", "--registry", str(shop["registry"]), "--buyer", LEAKER,
                        "--copyright", "(c) again", "--out", str(tmp_path / "x.json")]) == 2
    assert "already holds the active licence" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()  # nothing half-done
    copy = tmp_path / "open-registry"
    shutil.copytree(shop["registry"], copy)
    os.chmod(copy, 0o755)
    assert licence_cli(["list", "--registry", str(copy)]) == 2
    assert "chmod 700" in capsys.readouterr().err


def test_trace_names_the_buyer_of_an_exact_copy(shop, capsys):
    code = trace_cli(["--model", str(shop["workdir"][LEAKER]), "--registry", str(shop["registry"]),
                      "--data_dir", shop["data_dir"], "--num_images", "0", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["traced"] and report["buyer"] == LEAKER
    assert report["exact_copy_of"]["buyer"] == LEAKER
    assert report["ownership_verified"]
    evidence = {row["buyer"]: row for row in report["evidence"]}
    assert evidence[LEAKER]["accuracy"] > 0.85
    assert evidence[LEAKER]["comparison"]["log10_p_value"] < -20  # measured about 1e-87
    for other in set(BUYERS) - {LEAKER}:
        assert evidence[other]["accuracy"] < 0.35
        assert not evidence[other]["traced"] and evidence[other]["comparison"]["p_value"] > 0.5


@pytest.mark.parametrize("attack", ["pruned 30%", "fine-tuned on clean data",
                                    "fine-tuned on legal data, then pruned 30%"])
def test_trace_survives_light_fine_tuning_and_pruning(shop, digits, tmp_path, capsys, attack):
    images, labels, train_images, train_labels = digits
    model = api.load_protected(shop["workdir"][LEAKER])
    params = model.params
    if attack == "pruned 30%":
        params = prune(params, 0.3)
        kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
                   if path[-1].key == "kernel"]
        zeros = sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)
        assert 0.29 < zeros < 0.31
    elif attack == "fine-tuned on clean data":  # a thief without the licence: 30 Adam steps
        params = fine_tune(model.module, params, train_images, train_labels, steps=30,
                           learning_rate=1e-4)
    else:  # the buyer adapted the model with the licence before leaking it
        licence = Licence.load(shop["licence_file"][LEAKER])
        params = prune(fine_tune(model.module, params, train_images, train_labels, steps=100,
                                 learning_rate=1e-3, licence=licence), 0.3)
    leaked = tmp_path / "leaked.isnn"
    write_atomic(leaked, export_bytes(model.module, params, model.image_shape,
                                      {"dataset": "digits", "image_shape": [8, 8, 1],
                                       "num_classes": 10}))
    code = trace_cli(["--model", str(leaked), "--registry", str(shop["registry"]),
                      "--data_dir", shop["data_dir"], "--num_images", "0", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["buyer"] == LEAKER, report
    evidence = {row["buyer"]: row for row in report["evidence"]}
    # Measured: the leaker's licence 94-96% against at most 85% for any other registered
    # licence or no licence; comparison p-values 1e-86 (pruned), 1e-71, 1e-8 (fine-tuned).
    assert evidence[LEAKER]["accuracy"] > 0.85
    assert evidence[LEAKER]["comparison"]["log10_p_value"] < -6
    assert all(not evidence[b]["traced"] for b in set(BUYERS) - {LEAKER})
    assert report["exact_copy_of"] is None


def test_tracing_fails_honestly_once_fine_tuning_removed_the_protection(shop, digits):
    images, labels, train_images, train_labels = digits
    model = api.load_protected(shop["workdir"][LEAKER])
    params = fine_tune(model.module, model.params, train_images, train_labels, steps=100,
                       learning_rate=1e-3)
    bare = dataclasses.replace(model, params=params, source="fine-tuned")
    report = trace_licences(model_classifier(bare), candidates(shop), images, labels,
                            random_licences=20)
    # The copy now works without a licence (measured about 95%): nothing is traced.
    assert report["accuracy_without_licence"] > 0.85
    assert not report["traced"] and report["buyer"] is None


def test_verify_accepts_the_true_licence_and_rejects_forgeries(shop, digits):
    images, labels = digits[:2]
    model = api.load_protected(shop["workdir"][LEAKER])
    classify = model_classifier(model)
    licence = Licence.load(shop["licence_file"][LEAKER])
    true = ownership_test(classify, licence, images, labels, random_licences=100)
    assert true["verdict"] == "verified" and true["p_value"] < 1e-6, true
    assert true["accuracy_with_licence"] > 0.85 and true["accuracy_without_licence"] < 0.3
    forged = {
        "random secret": Licence.issue("(c) Forger Inc; licensed to nobody", licence.transform),
        "true copyright, wrong secret": licence.with_secret(bytes(range(7, 39))),
        "another buyer's licence": Licence.load(shop["licence_file"][BUYERS[0]]),
    }
    for name, claim in forged.items():
        result = ownership_test(classify, claim, images, labels, random_licences=100)
        assert result["verdict"] == "not verified" and result["p_value"] > 0.01, (name, result)
        assert result["accuracy_with_licence"] < 0.5, (name, result)


def test_verify_cli_on_a_workdir_a_callable_and_a_command(shop, digits, capsys):
    images, labels = digits[:2]
    licence_file = str(shop["licence_file"][LEAKER])
    assert verify_cli(["--model", str(shop["workdir"][LEAKER]), "--licence", licence_file,
                       "--data_dir", shop["data_dir"], "--num_images", "0", "--json"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    assert from_cli["verdict"] == "verified" and from_cli["images"] == 360
    # A Python callable that only answers labels: the exported bare network.
    served = shop["root"] / "served.isnn"
    export_workdir(shop["workdir"][LEAKER], served)
    exported = load_export(served)
    black_box = lambda x: exported.logits(x).argmax(-1)  # noqa: E731
    licence = Licence.load(licence_file)
    result = ownership_test(black_box, licence, images, labels, random_licences=100)
    assert result["correct"] == from_cli["correct"]
    assert result["log10_p_value"] == pytest.approx(from_cli["log10_p_value"])
    # A command (a separate process) answering a JSON list of labels.
    command = f"{sys.executable} -m isnn_jax.serve {served}"
    assert verify_cli(["--command", command, "--dataset", "digits", "--licence", licence_file,
                       "--data_dir", shop["data_dir"], "--num_images", "0",
                       "--random_licences", "20", "--json"]) == 0
    by_command = json.loads(capsys.readouterr().out)
    assert by_command["correct"] == from_cli["correct"] and by_command["p_value"] < 1e-6
    forged = shop["root"] / "forged.licence.json"
    licence.with_secret(bytes(32 * [9])).save(forged)
    assert verify_cli(["--model", str(shop["workdir"][LEAKER]), "--licence", str(forged),
                       "--data_dir", shop["data_dir"], "--num_images", "0"]) == 1
    assert "NOT VERIFIED" in capsys.readouterr().out


def test_export_runs_the_bare_model_with_the_licence_applied_by_the_caller(shop, digits):
    images = digits[0][:50]
    licence = Licence.load(shop["licence_file"][LEAKER])
    path = shop["root"] / "export-check.isnn"
    meta = export_workdir(shop["workdir"][LEAKER], path)
    assert meta["licence_fingerprint"] == licence.fingerprint() and "secret" not in meta
    exported = load_export(path)
    model = api.load_protected(shop["workdir"][LEAKER])
    np.testing.assert_allclose(exported.logits(np.asarray(api.apply_licence(licence, images))),
                               np.asarray(model.logits(images, licence=licence)), atol=1e-5)
    assert exported.logits(images[:7]).shape == (7, 10)  # any batch size


def write_pngs(folder, images, mode="L", size=None):
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        picture = Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8), "L")
        if size:
            picture = picture.resize(size, Image.Resampling.NEAREST)
        picture.convert(mode).save(folder / f"digit{index:03d}.png")
    return folder


def test_predict_reads_png_directories_and_npy_arrays(shop, digits, tmp_path, capsys):
    images, labels = digits[0][:40], digits[1][:40]
    folder = write_pngs(tmp_path / "pngs", images)
    workdir, licence_file = str(shop["workdir"][LEAKER]), str(shop["licence_file"][LEAKER])
    assert predict_cli(["--workdir", workdir, "--licence", licence_file, "--json",
                        str(folder)]) == 0
    records = json.loads(capsys.readouterr().out)["predictions"]
    predicted = np.array([record["class"] for record in records])
    # The digits pixels are multiples of 1/255 already, so PNG round trips them exactly.
    expected = api.load_protected(workdir).predict(images, Licence.load(licence_file))
    np.testing.assert_array_equal(predicted, expected)
    assert (predicted == labels).mean() > 0.85
    assert all(0.0 <= record["probability"] <= 1.0 for record in records)
    assert sum(records[0]["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    np.save(tmp_path / "batch.npy", np.round(images * 255).astype(np.uint8))
    export = shop["root"] / "predict.isnn"
    export_workdir(workdir, export)
    assert predict_cli(["--export", str(export), "--licence", licence_file,
                        str(tmp_path / "batch.npy")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 40
    assert [int(line.split()[1]) for line in lines] == list(expected)
    # Larger RGB (grey) images are resized to 8x8; the answers stay those of the small ones.
    big = write_pngs(tmp_path / "big", images, mode="RGB", size=(32, 32))
    resized, _ = read_inputs([big], (8, 8, 1))
    assert resized.shape == (40, 8, 8, 1)
    assert np.abs(resized - images).max() < 1e-6  # 4x4 blocks averaged back


def test_licence_for_another_model_is_refused(shop, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8, 1), np.float32))
    assert predict_cli(["--workdir", str(shop["workdir"][LEAKER]), "--licence",
                        str(shop["licence_file"][BUYERS[0]]), str(tmp_path / "x.npy")]) == 2
    error = capsys.readouterr().err
    assert "is for a different model" in error and "trained for licence" in error
    with open_registry(shop["registry"]) as registry:
        with pytest.raises(LicenceError, match="different model"):
            registry.record_model(LEAKER, "0" * 64, "w", 1,
                                  licence_id=registry.entry(BUYERS[0]).licence_id)


def test_revoked_licence_is_refused_for_protection_but_still_traced(shop, tmp_path, capsys):
    registry = tmp_path / "registry"
    shutil.copytree(shop["registry"], registry)
    buyer = BUYERS[2]
    assert licence_cli(["revoke", "--registry", str(registry), "--buyer", buyer,
                        "--reason", "contract ended"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "revoked"
    with pytest.raises(RevokedLicenceError, match="revoked on .*contract ended.*issue a new one"):
        protect_for_buyer(registry, buyer, workflow_config(shop["data_dir"]), tmp_path / "w")
    assert not (tmp_path / "w").exists()
    assert licence_cli(["record-model", "--registry", str(registry), "--buyer", buyer,
                        "--workdir", str(shop["workdir"][buyer])]) == 2
    assert "was revoked" in capsys.readouterr().err
    assert trace_cli(["--model", str(shop["workdir"][buyer]), "--registry", str(registry),
                      "--data_dir", shop["data_dir"], "--num_images", "0", "--json",
                      "--random_licences", "10"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["buyer"] == buyer and report["evidence"][0]["status"] == "revoked"


def test_tampered_licence_file_is_refused(shop, tmp_path, capsys):
    record = json.loads(shop["licence_file"][LEAKER].read_text())
    record["copyright"] = record["copyright"].replace("beta", "bete")
    tampered = tmp_path / "tampered.licence.json"
    tampered.write_text(json.dumps(record))
    os.chmod(tampered, 0o600)
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8, 1), np.float32))
    assert predict_cli(["--workdir", str(shop["workdir"][LEAKER]), "--licence", str(tampered),
                        str(tmp_path / "x.npy")]) == 2
    error = capsys.readouterr().err
    assert "integrity check" in error and record["secret"] not in error
    assert verify_cli(["--model", str(shop["workdir"][LEAKER]), "--licence", str(tampered),
                       "--data_dir", shop["data_dir"]]) == 2
    assert "integrity check" in capsys.readouterr().err


def test_images_of_wrong_size_channels_or_format_are_refused(tmp_path):
    shape = (8, 8, 1)
    np.save(tmp_path / "big.npy", np.zeros((3, 28, 28, 1), np.uint8))
    with pytest.raises(ImageError, match="28x28 .* model expects 8x8"):
        read_inputs([tmp_path / "big.npy"], shape)
    np.save(tmp_path / "rgb.npy", np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(ImageError, match=r"3 channels \(RGB\) but the model expects 1 channel"):
        read_inputs([tmp_path / "rgb.npy"], shape)
    np.save(tmp_path / "range.npy", np.full((1, 8, 8, 1), 3.0, np.float32))
    with pytest.raises(ImageError, match=r"must lie in \[0, 1\]"):
        read_inputs([tmp_path / "range.npy"], shape)
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[..., 0] = 200  # red: not a grey image
    Image.fromarray(colour).save(tmp_path / "red.png")
    with pytest.raises(ImageError, match=r"3 channels \(RGB\).*--convert"):
        read_inputs([tmp_path / "red.png"], shape)
    converted, _ = read_inputs([tmp_path / "red.png"], shape, convert=True)
    assert converted.shape == (1, 8, 8, 1)
    assert converted[0, 0, 0, 0] == pytest.approx(0.299 * 200 / 255, abs=1e-3)
    grey = write_pngs(tmp_path / "grey", np.zeros((1, 8, 8, 1)))
    with pytest.raises(ImageError, match=r"1 channel \(grey\) but the model expects 3 channels"):
        read_inputs([grey], (8, 8, 3))
    with pytest.raises(ImageError, match=r"is 16x16 \(WxH\) but the model expects 8x8"):
        read_inputs([tmp_path / "red.png"], shape, resize=False, convert=True)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="is empty"):
        read_inputs([tmp_path / "empty.png"], shape)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageError, match="not an image file"):
        read_inputs([tmp_path / "notes.png"], shape)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    whole = (tmp_path / "noise.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[:len(whole) // 2])  # header intact, data cut
    with pytest.raises(ImageError, match="damaged or truncated"):
        read_inputs([tmp_path / "cut.png"], shape, convert=True)
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.txt").write_text("x")
    with pytest.raises(ImageError, match="holds no image files"):
        read_inputs([tmp_path / "nothing"], shape)
    with pytest.raises(ImageError, match="not found"):
        read_inputs([tmp_path / "missing.png"], shape)


def test_predict_cli_reports_image_errors_with_the_fix(shop, tmp_path, capsys):
    np.save(tmp_path / "big.npy", np.zeros((3, 28, 28, 1), np.uint8))
    assert predict_cli(["--workdir", str(shop["workdir"][LEAKER]), "--licence",
                        str(shop["licence_file"][LEAKER]), str(tmp_path / "big.npy")]) == 2
    error = capsys.readouterr().err
    assert "model expects 8x8" in error and "resize" in error


def test_black_box_command_errors_are_clear(tmp_path):
    broken = command_classifier([sys.executable, "-c", "import sys; sys.exit('no model here')"])
    with pytest.raises(Exception, match="exited with status 1: no model here"):
        broken(np.zeros((2, 8, 8, 1), np.float32))
    chatty = command_classifier([sys.executable, "-c", "print('hello')"])
    with pytest.raises(Exception, match="did not print JSON"):
        chatty(np.zeros((2, 8, 8, 1), np.float32))
