"""ImageNet at 224x224 with ResNet-18 and the streaming pipeline: a pod-sized run (docs/scaling.md).

Re-exports isnn_jax/configs/imagenet_resnet18.py: an installed isnn_jax finds that one from
any directory as `--config imagenet_resnet18`; this file keeps
`--config configs/imagenet_resnet18.py` working.
"""

from isnn_jax.configs.imagenet_resnet18 import get_config  # noqa: F401
