"""ImageNet (TFDS `imagenet2012`) at 224x224 with ResNet-18 (ImageNet stem, GroupNorm) and the
streaming input pipeline: a pod-sized run (docs/scaling.md). Not run on this project's machines.

TFDS cannot download ImageNet: place the archives under data_dir's manual folder
(`tfds.builder("imagenet2012").download_and_prepare()` names the path) and prepare once with
TensorFlow installed, as array_record. The global batch of 1024 splits over 8 to 1024 devices.
"""

import ml_collections

from isnn_jax.training.config import default_config


def get_config() -> ml_collections.ConfigDict:
    """ImageNet / ResNet-18 variant of the base configuration."""
    config = default_config()
    config.data.name = "imagenet2012"
    config.data.image_shape = (224, 224, 3)  # shorter side resized, centre-cropped
    config.data.random_crop = 16
    config.data.random_flip = True
    config.data.pipeline = "streaming"
    config.model.name = "resnet18"
    config.model.stem = "imagenet"
    config.model.width = 64
    config.model.norm = "group"
    config.model.dtype = "bfloat16"
    # A convolution needs its pixels' neighbourhoods, so the whole-image mixing (which an MLP
    # learns under) does not fit it; the additive pattern is the one a CNN learns under, with
    # the weaknesses docs/security.md measures for the CNN designs.
    config.licence.kind = "additive"
    config.licence.epsilon = 0.03
    config.train.batch_size = 1024
    config.train.epochs = 90
    config.train.learning_rate = 2e-3
    config.train.warmup_steps = 2500
    config.train.log_every_steps = 100
    config.train.checkpoint_every_steps = 2000
    config.eval.batch_size = 1024
    config.eval.random_licences = 100
    return config
