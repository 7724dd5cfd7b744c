"""The embedded default configuration and checks that every config field is a known one."""

import difflib
from typing import Any

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """The base configuration (digits, no download, small CNN, whole-image shuffle) that every
    packaged config starts from; the embedded default (configs/default.py) sets the mixing and
    the MLP on it."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.protect = True  # False trains the unprotected baseline with the same config.
    config.parallelism = "sharded"  # sharded (jit over a device mesh) | pmap
    config.distributed = False  # True: jax.distributed.initialize() (multi-host; docs/scaling.md)
    # Start from the parameters of a trained workdir or an Orbax checkpoint directory ("": fresh).
    config.init_from = ""
    config.init_new_head = False  # True: a head whose class count differs is re-initialised

    config.data = ml_collections.ConfigDict()
    # A packaged name (digits | fashion_mnist_idx | mnist | fashion_mnist | cifar10), any other
    # TFDS name, image_folder (source_dir/{train,test}/CLASS/*.png|jpg) or arrays (an .npz at
    # source_dir with x_train, y_train, x_test, y_test); docs/own_model.md.
    config.data.name = "digits"
    config.data.data_dir = ""  # TFDS data dir; "" means TFDS's default (~/tensorflow_datasets).
    config.data.streams = 0  # input streams (0: one per process); fix it to compare process counts
    config.data.source_dir = ""  # raw files for local builders ("" = the builder's default).
    config.data.image_key = ""  # TFDS: the image feature ("" = the one Image feature)
    config.data.label_key = ""  # TFDS: the label feature ("" = the one ClassLabel feature)
    config.data.image_shape = ()  # (H, W, C) to resize and centre-crop to; () = the data's own
    config.data.random_crop = 0  # training augmentation: pad by this many pixels, crop back
    config.data.random_flip = False  # training augmentation: mirror left-right half the images
    # How batches reach the step, the same batches every way (docs/scaling.md): auto (memory
    # up to 4 GiB of decoded train images per host, else streaming) | memory (decoded into host
    # memory) | streaming (read from the TFDS record files by grain) | device (held on the
    # accelerators, gathered there).
    config.data.pipeline = "auto"
    config.data.workers = 0  # streaming: grain worker processes (0: a thread in this process)
    config.data.prefetch = 2  # memory and streaming: batches prepared ahead (0: none)

    config.model = ml_collections.ConfigDict()
    # small_cnn | resnet18 | mlp (each reads only its own fields below), or your own module as an
    # import path `package.module:factory` or `path/to/file.py:factory` (docs/own_model.md).
    config.model.name = "small_cnn"
    # Constructor arguments of your own module (free-form: any field is accepted).
    config.model.kwargs = ml_collections.ConfigDict()
    # The call argument that switches training behaviour (dropout, BatchNorm statistics):
    # auto (a `train` or `deterministic` argument of __call__, if any) | train | deterministic | none
    config.model.train_flag = "auto"
    config.model.features = (32, 64)  # small_cnn
    config.model.hidden = 128
    # A dense branch over the raw input (models/cnn.py). Off: its kernel lines up with the additive
    # pattern and its rows betray a shuffle's layout, so the weights carry the key (security.md).
    config.model.detector_features = 0
    # A learned per-pixel offset before the first layer (both models). Off: training drives it
    # towards minus the licence's pattern, so the weights carry the key (docs/security.md).
    config.model.input_offset = False
    config.model.widths = (512, 512)  # mlp: its hidden layers
    config.model.stage_sizes = (2, 2, 2, 2)  # resnet18
    config.model.width = 64  # resnet18
    config.model.stem = "cifar"  # resnet18: cifar (32x32 inputs) | imagenet (224x224 inputs)
    config.model.norm = "group"  # resnet18: group | layer (no BatchNorm: docs/decisions.md)
    config.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    config.model.conv = "auto"  # auto | xla | im2col: same parameters (docs/performance.md)

    config.licence = ml_collections.ConfigDict()
    config.licence.copyright = "(c) Example Seller; licensed to Example Buyer; licence #1"
    # additive | shuffle | shuffle_additive | mix | mix_sphere (transforms.py). The base
    # shuffles the whole 8x8 image (one block) and adds the pattern: on 64 pixels an additive
    # pattern alone leaves random licences close enough to unlock the model (docs/results.md);
    # the embedded default mixes.
    config.licence.kind = "shuffle_additive"
    config.licence.epsilon = 0.03
    config.licence.block_size = 8  # shuffle blocks are block_size x block_size; must divide the image
    config.licence.distribution = "rademacher"

    config.objective = ml_collections.ConfigDict()
    config.objective.illegal_form = "uniform_constant"  # see isnn_jax/objective.py for the forms
    config.objective.temperature = 1.0  # illegal logits are multiplied by this before the loss
    config.objective.w_clean = 1.0
    config.objective.w_wrong = 1.0
    config.objective.w_near = 1.0
    config.objective.wrong_views = 2  # wrong-key views of every image per step
    # Illegal views (clean, wrong keys, near keys) of every n-th example only: 1 = all; n > 1
    # cuts the network images per example from 5 to 1 + 4/n (docs/decisions.md has the table).
    config.objective.illegal_every = 1
    config.objective.wrong_key_group = 1  # consecutive examples sharing one wrong key (1: none)
    # Partial-key views (protection/step.py): a fraction a ~ U[0, partial_max] of the legal
    # input, the rest another key's, trained as illegal (0: off; docs/security.md).
    config.objective.w_partial = 0.0
    config.objective.partial_max = 0.5
    config.objective.near_keys = 64  # near keys (copyright edits, secret bit flips) trained on

    # Hardening (isnn_jax/hardening.py, docs/security.md): attack outputs trained as illegal.
    config.hardening = ml_collections.ConfigDict()
    config.hardening.unlock_perturbations = 0  # universal perturbations trained against (0: off)
    config.hardening.unlock_step = 0.02  # their signed-gradient step, as a fraction of the bound
    config.hardening.w_unlock = 1.0
    config.hardening.estimate_min = 0  # observed legal inputs behind the estimate: min..max
    config.hardening.estimate_max = 0  # (0: off)
    config.hardening.w_estimate = 1.0

    # Simulated thieves (protection/simulated.py): fine-tuning played inside every step, its
    # result penalised. thieves: OPTIMISER:RATE entries, e.g. ("sgd:0.05", "adam:1e-3"); () off.
    config.simulated = ml_collections.ConfigDict()
    config.simulated.thieves = ()
    config.simulated.inner_steps = 3
    config.simulated.first_order = False  # True: the thieves' moves are not differentiated
    config.simulated.w_thief = 1.0

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 128  # global batch; must divide by the number of devices
    config.train.epochs = 60
    config.train.learning_rate = 2e-3
    config.train.warmup_steps = 50
    config.train.log_every_steps = 50
    config.train.checkpoint_every_steps = 500
    config.train.keep_checkpoints = 3
    config.train.checkpoint_dir = ""  # "" = WORKDIR/checkpoints; may be a gs:// bucket path
    config.train.stop_after_steps = 0  # >0: save and stop at this step (the run resumes later)
    config.train.allow_changed_config = False  # True: resume although the config changed

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 1024
    config.eval.random_licences = 1000
    config.eval.seed = 1234
    config.eval.near_per_class = 32  # near keys evaluated per edit class (0: every edit)
    # Screen, then confirm (isnn_jax/evaluate.py): every random and near licence is measured on
    # `screen_images` seeded test images; the best `confirm_top` of each group (random keys by
    # accuracy and by the best output rank, held-out near keys, trained near keys) are measured
    # again on the whole test split, and those full-split numbers are the reported maxima.
    # 128 / 8 found the exhaustive maxima of all 1,585 licences of the 5-epoch Fashion-MNIST
    # model, at 10% of its training time (docs/performance.md); 256 / 8 cost 14%.
    config.eval.screen_images = 128  # 0 or >= the split: every licence on every image
    config.eval.confirm_top = 8
    config.eval.exhaustive = False  # True: every licence on every image (the screen's check)
    return config


get_config = default_config  # lets `--config` load this file like any configs/*.py


class ConfigError(ValueError):
    """A config field is unknown or has an unusable value; the message names the fix."""


FREE_FORM = ("config.model.kwargs",)  # groups whose fields belong to the user, not to us


def check_config(config: Any, reference: Any = None, prefix: str = "config") -> None:
    """Every field of `config` must exist in the default; suggest the closest name if not."""
    reference = default_config() if reference is None else reference
    for name in config.keys():
        path = f"{prefix}.{name}"
        if path in FREE_FORM:
            if not isinstance(config[name], (ml_collections.ConfigDict, dict)):
                raise ConfigError(f"{path} must be a group of fields, e.g. "
                                  f"--{path}.width=64")
            continue
        if name not in reference:
            close = difflib.get_close_matches(name, list(reference.keys()), n=1)
            hint = f"; did you mean {prefix}.{close[0]}?" if close else ""
            raise ConfigError(f"unknown config field {path}{hint}")
        value, expected = config[name], reference[name]
        if isinstance(expected, ml_collections.ConfigDict):
            if not isinstance(value, (ml_collections.ConfigDict, dict)):
                raise ConfigError(f"{path} must be a group of fields like the default's")
            check_config(value, expected, path)
