"""ResNet-18 (CIFAR stem, GroupNorm) on CIFAR-10: a pod-sized run (docs/scaling.md).

Re-exports isnn_jax/configs/cifar10_resnet18.py: an installed isnn_jax finds that one from
any directory as `--config cifar10_resnet18`; this file keeps
`--config configs/cifar10_resnet18.py` working.
"""

from isnn_jax.configs.cifar10_resnet18 import get_config  # noqa: F401
