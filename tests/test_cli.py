"""The shared command line (isnn_jax.cli): flags, configs, overrides, licences and exit codes.

Most tests call the commands' `main(argv)` in-process and read the exit code and stderr; a few
start `python -m ...` to check the real entry points.
"""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import pytest

from isnn_jax import protect, train
from isnn_jax.cli import configs, doors, logs
from isnn_jax.seller import buyers
from isnn_jax.training.loop import NonFiniteLossError, train_and_evaluate
from isnn_jax.configs.default import get_config as embedded_default
from isnn_jax.training.config import ConfigError
from isnn_jax.protection.licence import Licence, LicenceError, TransformSpec
from isnn_jax.cli.doors import EXIT_PREEMPTED
from isnn_jax.training.preemption import TrainingPreempted
from isnn_jax.protection.transforms import check_images
from tiny_config import RESUME_LICENCE

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def one_error_line(capsys) -> str:
    """The command's stderr, which must be exactly one `error:` line (no traceback, no usage)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# train: bad command lines are one `error:` line and exit 2, with nothing written


@pytest.mark.parametrize("args,line", [
    (["--licence", "L"],
     "error: the following arguments are required: --workdir (see python -m isnn_jax.train "
     "--help)"),
    (["--workdir", "{w}", "--licence", "L", "--config.train.epochs=three"],
     "error: --config.train.epochs=three: config.train.epochs takes an integer, not 'three' "
     "(the config has 60)"),
    (["--workdir", "{w}", "--licence", "L", "--config", "configs/nonexistent.py"],
     "error: config file configs/nonexistent.py not found; pass a config file or one of the "
     "packaged configs: default, fashion_mnist, fashion_mnist_shuffle7, fashion_mnist_strong, "
     "cifar10_resnet18, imagenet_resnet18"),
    (["--workdir", "{w}", "--licence", "L", "--config.train.epochz=3"],
     "error: unknown config field config.train.epochz; did you mean config.train.epochs?"),
    (["--workdir", "{w}", "--licence", "L", "--config.protect=maybe"],
     "error: --config.protect=maybe: config.protect takes True or False, not 'maybe' (the "
     "config has True)"),
    (["--workdir", "{w}", "--licence", "L", "stray"],
     "error: unrecognized arguments: stray (see python -m isnn_jax.train --help)"),
    (["--workdir", "{w}", "--licence", "{missing}"],
     "error: licence file {missing} not found; pass the buyer's licence file, or issue one "
     "with `python -m isnn_jax.licence issue --copyright TEXT --out NEW_PATH`"),
    (["--workdir", "{w}", "--licence", "L", "--issue_licence", "M"],
     "error: pass either --licence (existing file) or --issue_licence (new file)"),
])
def test_train_bad_command_lines_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args,
                                                                        line):
    workdir, missing = tmp_path / "w", tmp_path / "none.json"
    argv = [a.format(w=workdir, missing=missing) for a in args]
    assert train.main(argv) == 2
    assert one_error_line(capsys) == line.format(missing=missing)
    assert not workdir.exists()


def test_a_group_is_not_a_field(tmp_path, capsys):
    assert train.main(["--workdir", str(tmp_path / "w"), "--config.train=3"]) == 2
    assert re.fullmatch(r"error: config.train is a group of fields; set one of them, e.g. "
                        r"--config.train.\w+=VALUE", one_error_line(capsys))


def test_protect_bad_command_lines_take_the_same_path(tmp_path, capsys):
    assert protect.main(["--registry", str(tmp_path / "r"), "--buyer", "b"]) == 2
    assert one_error_line(capsys) == ("error: the following arguments are required: --workdir "
                                      "(see python -m isnn_jax.protect --help)")
    assert protect.main(["--registry", str(tmp_path / "r"), "--buyer", "b", "--workdir",
                         str(tmp_path / "w"), "--config.train.epochs=three"]) == 2
    assert "config.train.epochs takes an integer, not 'three'" in one_error_line(capsys)


@pytest.mark.parametrize("main", [train.main, protect.main])
def test_help_exits_0_and_names_the_config_forms(main, capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m isnn_jax.")
    assert "--config.FIELD=VALUE" in out and "fashion_mnist_shuffle7" in out


def test_every_flag_of_the_other_commands_has_help_text(capsys):
    from isnn_jax import evaluate, export, leak, predict, verify

    for main in (evaluate.main, verify.main, export.main, predict.main, leak.main):
        assert main(["--help"]) == 0
        out = capsys.readouterr().out
        lines = out[out.index("options:"):].splitlines()[1:] + [""]
        # argparse puts help after the flag on its line, or on the next, deeper-indented line.
        bare = [line for line, following in zip(lines, lines[1:])
                if re.match(r"  -", line) and not re.search(r"\S {2,}\S", line.strip())
                and not re.match(r" {6,}[^ -]", following)]
        assert not bare, (main.__module__, bare)


# ---------------------------------------------------------------------------------------------
# configs: files, packaged names, overrides


def test_packaged_config_names_equal_the_checkout_files_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    from_file = configs.load_config("configs/fashion_mnist.py")
    assert from_file.data.name == "fashion_mnist_idx"
    assert configs.load_config(str(ROOT / "configs" / "fashion_mnist_shuffle7.py")).licence.kind == \
        "shuffle_additive"
    monkeypatch.chdir(tmp_path)  # no configs/ here: the name, and the checkout path, still work
    assert configs.load_config("fashion_mnist").to_dict() == from_file.to_dict()
    assert configs.load_config("configs/fashion_mnist.py").to_dict() == from_file.to_dict()
    assert configs.load_config(None).to_dict() == embedded_default().to_dict()
    assert (embedded_default().licence.kind, embedded_default().model.name) == ("mix", "mlp")
    assert configs.load_config("cifar10_resnet18").model.name == "resnet18"
    # Each packaged config names its own model and transform; none inherits the embedded
    # default's mixing and MLP by accident.
    designs = {name: (configs.load_config(name).model.name, configs.load_config(name).licence.kind)
               for name in ("fashion_mnist", "fashion_mnist_shuffle7", "fashion_mnist_strong",
                            "cifar10_resnet18", "imagenet_resnet18")}
    assert designs == {"fashion_mnist": ("small_cnn", "additive"),
                       "fashion_mnist_shuffle7": ("small_cnn", "shuffle_additive"),
                       "fashion_mnist_strong": ("mlp", "mix"),
                       "cifar10_resnet18": ("resnet18", "additive"),
                       "imagenet_resnet18": ("resnet18", "additive")}
    own = tmp_path / "configs" / "mine.py"  # a user's file may import a packaged config
    own.parent.mkdir()
    own.write_text("from isnn_jax.configs import fashion_mnist\n\n\ndef get_config(arg='5'):\n"
                   "    config = fashion_mnist.get_config()\n"
                   "    config.train.epochs = int(arg)\n    return config\n")
    assert configs.load_config("configs/mine.py").train.epochs == 5
    assert configs.load_config("configs/mine.py:7").train.epochs == 7
    with pytest.raises(ConfigError, match="config file configs/other.py not found"):
        configs.load_config("configs/other.py")


def test_a_broken_config_file_is_named_with_its_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the checkout: no top-level `configs` package
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and Path(p).resolve() != ROOT])
    monkeypatch.delitem(sys.modules, "configs", raising=False)
    broken = tmp_path / "broken.py"
    broken.write_text("import ml_collections\n\n\ndef get_config():\n    return undefined_name\n")
    with pytest.raises(ConfigError, match=r"config file .*broken.py failed \(line 5\): "
                                          r"NameError: name 'undefined_name' is not defined"):
        configs.load_config(str(broken))
    old_style = tmp_path / "old.py"  # the layout before configs were packaged
    old_style.write_text("from configs import default\n\n\ndef get_config():\n"
                         "    return default.get_config()\n")
    with pytest.raises(ConfigError, match="No module named 'configs'; the shipped configs import "
                                          "as isnn_jax.configs.NAME"):
        configs.load_config(str(old_style))
    (tmp_path / "none.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="has no get_config"):
        configs.load_config(str(tmp_path / "none.py"))


def test_override_forms_are_the_documented_absl_ones(tmp_path):
    parser = doors.ArgumentParser(prog="t")
    configs.add_config_argument(parser)
    parser.add_argument("--workdir")
    args, config = configs.parse_with_config(parser, [
        "--config", str(TESTS / "tiny_config.py"), "--workdir", "W",
        "--config.train.epochs=3", "--config.train.learning_rate", "1e-2",
        "--config.protect=False", "--config.distributed", "--config.model.noinput_offset",
        "--config.model.features=(8,16)", "--config.seed", "-1",
        "--config.data.data_dir=/shared/tfds", "--config.licence.epsilon=1",
    ])
    assert args.workdir == "W"
    assert (config.train.epochs, config.train.learning_rate) == (3, 0.01)
    assert (config.protect, config.distributed, config.model.input_offset) == (False, True, False)
    assert config.model.features == (8, 16) and config.seed == -1
    assert config.data.data_dir == "/shared/tfds" and config.licence.epsilon == 1.0
    assert isinstance(config.licence.epsilon, float)
    assert config.model.hidden == 64  # untouched fields keep the file's values
    with pytest.raises(ConfigError, match="unknown config field config.modle; did you mean "
                                          "config.model?"):
        configs.parse_with_config(parser, ["--config.modle.name=x"])
    with pytest.raises(doors.UsageError, match="--config.seed needs a value"):
        configs.parse_with_config(parser, ["--config.seed"])


# ---------------------------------------------------------------------------------------------
# errors -> exit codes


def test_error_mapping_preemption_75_known_2_bugs_raise(capsys):
    @doors.command
    def fails(err):
        raise err

    assert fails(TrainingPreempted(7, "SIGTERM")) == EXIT_PREEMPTED == doors.EXIT_PREEMPTED
    assert capsys.readouterr().err == ("stopped: preempted by SIGTERM at step 7; a checkpoint at "
                                       "step 7 was saved. Rerun the same command to resume from "
                                       "it\n")
    for err in (LicenceError("bad licence"), FileNotFoundError("gone"),
                NonFiniteLossError("loss became nan")):
        assert fails(err) == 2
        assert one_error_line(capsys) == f"error: {err}"
    with pytest.raises(KeyError):  # a bug keeps its traceback
        fails(KeyError("bug"))


def test_protect_preempted_exits_75_like_train(tmp_path, monkeypatch, capsys):
    """protect reaches train_and_evaluate through the same door, so preemption is exit 75."""
    from isnn_jax.seller.registry import open_registry

    with open_registry(tmp_path / "r", create=True) as registry:
        registry.add("b", RESUME_LICENCE)

    def preempted(config, workdir, licence, initial_params=None):
        assert initial_params is None
        assert licence.fingerprint() == RESUME_LICENCE.fingerprint()
        assert config.train.epochs == 3 and config.licence.epsilon == RESUME_LICENCE.transform.epsilon
        raise TrainingPreempted(12, "SIGTERM")

    monkeypatch.setattr(buyers, "train_and_evaluate", preempted)
    code = protect.main(["--registry", str(tmp_path / "r"), "--buyer", "b", "--workdir",
                         str(tmp_path / "w"), "--config", str(TESTS / "tiny_config.py"),
                         "--config.train.epochs=3"])
    assert code == EXIT_PREEMPTED
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "stopped: preempted by SIGTERM at step 12")


def test_orbax_read_only_notices_are_silenced_other_warnings_kept(tmp_path, caplog):
    from isnn_jax.training import checkpoints

    logs.quiet_libraries()
    (tmp_path / "ckpt").mkdir()
    absl_logger, seen = logging.getLogger("absl"), []
    collect = logging.Handler(logging.WARNING)
    collect.emit = seen.append  # whatever earlier tests did to propagation or levels
    old_level = absl_logger.level
    absl_logger.addHandler(collect)
    absl_logger.setLevel(logging.WARNING)
    try:
        checkpoints.manager(str(tmp_path / "ckpt"), read_only=True).close()
        absl_logger.warning("a real warning")
    finally:
        absl_logger.removeHandler(collect)
        absl_logger.setLevel(old_level)
    assert [record.getMessage() for record in seen] == ["a real warning"]


# ---------------------------------------------------------------------------------------------
# smaller messages


def test_truncated_licence_json_names_line_and_column():
    licence = Licence.issue("(c) S; B; 1", TransformSpec())
    text = licence.to_json()
    for cut in (len(text) // 2, len(text) - 5):
        with pytest.raises(LicenceError, match=r"^f.json is not valid JSON \(\w[^()]*: line \d+ "
                                               r"column \d+\); is it a complete licence file\?$") as err:
            Licence.from_json(text[:cut], source="f.json")
        assert licence.secret.hex() not in str(err.value)
    with pytest.raises(LicenceError, match=r"\(Expecting ',' delimiter: line 2 column 3\)"):
        Licence.from_json('{"format": 1\n  "copyright": "x"}', source="f.json")


@pytest.mark.parametrize("shape,fix", [
    ((3, 8, 8), "add the channel axis with images[..., None]"),
    ((8, 8, 1), "add a batch axis with images[None]"),
    ((8, 8), "images[None, ..., None]"),
])
def test_missing_axis_message_names_the_right_axis(shape, fix):
    with pytest.raises(ValueError, match=re.escape(fix)):
        check_images(jnp.zeros(shape))


def test_export_and_leak_refuse_to_replace_a_file(tmp_path, capsys):
    from isnn_jax import export, leak

    out = tmp_path / "model.isnn"
    out.write_bytes(b"keep me")
    for main in (export.main, leak.main):
        assert main(["--workdir", str(tmp_path / "w"), "--out", str(out)]) == 2
        assert one_error_line(capsys) == (f"error: {out} already exists; pass --force to replace "
                                          "it or choose another --out")
    assert out.read_bytes() == b"keep me"


# ---------------------------------------------------------------------------------------------
# the real entry points (subprocesses)


@pytest.mark.slow
def test_python_m_train_door_prints_one_line_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "isnn_jax.train", "--licence", "L",
                             "--workdir", str(tmp_path / "w"), "--config.train.epochs=three"],
                            capture_output=True, text=True, timeout=120, env=ENV, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == ("error: --config.train.epochs=three: config.train.epochs takes an "
                             "integer, not 'three' (the config has 60)\n")
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_sigterm_during_protect_saves_and_exits_75(tmp_path, data_dir):
    from isnn_jax.seller.registry import open_registry

    with open_registry(tmp_path / "r", create=True) as registry:
        registry.add("b", RESUME_LICENCE)
    workdir = tmp_path / "w"
    args = [sys.executable, "-m", "isnn_jax.protect", "--registry", str(tmp_path / "r"),
            "--buyer", "b", "--workdir", str(workdir), "--config", str(TESTS / "tiny_config.py"),
            f"--config.data.data_dir={data_dir}", "--config.train.epochs=20",
            "--config.eval.random_licences=0"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=ENV)
    try:
        deadline, metrics = time.monotonic() + 180, workdir / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().strip()):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == EXIT_PREEMPTED, stderr
    assert "Traceback" not in stderr
    step = int(re.search(r"^stopped: preempted by SIGTERM at step (\d+)", stderr, re.M).group(1))
    assert (workdir / "checkpoints" / str(step)).is_dir()
    assert json.loads((workdir / "isnn_metadata.json").read_text())["licence_fingerprint"] == \
        RESUME_LICENCE.fingerprint()


@pytest.mark.slow
def test_rerunning_a_finished_workdir_says_so_and_announces_the_evaluation(tmp_path, data_dir,
                                                                            caplog):
    from tiny_config import tiny_config

    config = tiny_config(data_dir, epochs=1)
    config.eval.random_licences = 2
    config.eval.near_per_class = 1
    train_and_evaluate(config, tmp_path / "w", RESUME_LICENCE)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="isnn_jax"):
        train_and_evaluate(config, tmp_path / "w", RESUME_LICENCE)
    messages = [record.getMessage() for record in caplog.records]
    assert f"{tmp_path / 'w'} is already trained (step 22 of 22); nothing to train, evaluating " \
           "it again" in messages
    assert "evaluating on 360 test images ..." in messages
    assert not any(m.startswith("training protected model") for m in messages)


@pytest.mark.slow  # trains and checkpoints through Orbax: the full suite runs it
def test_an_issued_licence_is_written_only_when_the_run_can_start(tmp_path, capsys, data_dir):
    """A model that cannot be built leaves neither a licence file nor a workdir; a run that
    starts saves the licence before anything else."""
    from isnn_jax import train
    licence = tmp_path / "new.licence.json"
    code = train.main(["--config", str(TESTS / "tiny_config.py"), "--workdir", str(tmp_path / "w"),
                       "--issue_licence", str(licence), "--config.model.name=no_such_pkg:Net",
                       f"--config.data.data_dir={data_dir}"])
    assert code == 2 and "cannot import 'no_such_pkg'" in capsys.readouterr().err
    assert not licence.exists() and not (tmp_path / "w").exists()
    code = train.main(["--config", str(TESTS / "tiny_config.py"), "--workdir", str(tmp_path / "w"),
                       "--issue_licence", str(licence), "--config.train.stop_after_steps=1",
                       f"--config.data.data_dir={data_dir}"])
    assert code == 0 and licence.exists()
