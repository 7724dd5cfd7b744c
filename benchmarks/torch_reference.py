"""A PyTorch reference of the ISNN train step: the same models, views and combined objective.

What a user would write instead of isnn_jax, kept equal to it so that speed can be compared:

* `TorchSmallCNN` and `TorchResNet18` compute the same function as `isnn_jax.models.SmallCNN`
  and `ResNet18` given the same weights (`load_flax_params` copies a Flax parameter tree in):
  Flax's SAME padding (asymmetric for stride 2), NHWC flattening order, GroupNorm epsilon 1e-6.
  Tensors are logically NCHW and laid out channels-last in memory (PyTorch's fast CPU layout).
* `make_views` builds the legal, clean, wrong-key and near-key views exactly as
  `isnn_jax.protection.step.make_views` does, with the licence and near-key patterns taken from JAX (so
  legal inputs are bit-identical) and the fresh wrong-key patterns drawn with torch's generator
  (a Rademacher sign per pixel, the same distribution; pass `wrong_patterns` to use given ones).
* `combined_loss` is `isnn_jax.protection.objective.combined_loss` for the illegal forms "uniform",
  "constant" and "uniform_constant" (the default).

tests/test_torch_reference.py checks loss and gradients against JAX on equal weights and inputs.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

GROUP_NORM_EPSILON = 1e-6  # flax.linen.GroupNorm's default (torch's is 1e-5)


def to_torch_images(images: np.ndarray) -> torch.Tensor:
    """NHWC float32 NumPy images -> an NCHW tensor with channels-last strides (no copy)."""
    array = np.ascontiguousarray(images, dtype=np.float32)
    if not array.flags.writeable:  # e.g. a view of a JAX array: torch wants writable memory
        array = array.copy()
    return torch.from_numpy(array).permute(0, 3, 1, 2)


class SameConv(nn.Module):
    """A Conv2d padded like Flax/XLA "SAME": stride 2 pads one pixel at the end only."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.stride, self.kernel = stride, kernel
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad (total max((out-1)*s + k - in, 0), low half first) and convolve."""
        height, width = x.shape[-2:]
        pads = []
        for size in (width, height):
            out = -(-size // self.stride)
            total = max((out - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        if self.stride == 1 and pads[0] == pads[1] == pads[2] == pads[3]:
            return F.conv2d(x, self.conv.weight, self.conv.bias, 1, pads[0])
        return self.conv(F.pad(x, pads))


class TorchSmallCNN(nn.Module):
    """`isnn_jax.models.SmallCNN` in PyTorch (conv-ReLU-pool stages, detector branch, offset)."""

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int],
                 features: Sequence[int] = (32, 64), hidden: int = 128,
                 detector_features: int = 0, input_offset: bool = False) -> None:
        super().__init__()
        height, width, channels = image_shape
        self.offset = nn.Parameter(torch.zeros(channels, height, width)) if input_offset else None
        self.convs = nn.ModuleList()
        cin = channels
        for cout in features:
            self.convs.append(SameConv(cin, cout, 3))
            cin = cout
            if height >= 2 and width >= 2:
                height, width = height // 2, width // 2
        self.detector = (nn.Linear(channels * image_shape[0] * image_shape[1], detector_features)
                         if detector_features else None)
        flat = cin * height * width + (detector_features or 0)
        self.hidden = nn.Linear(flat, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of NCHW images."""
        x = images if self.offset is None else images + self.offset
        for conv in self.convs:
            x = F.relu(conv(x))
            if x.shape[-2] >= 2 and x.shape[-1] >= 2:
                x = F.max_pool2d(x, 2)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # Flax flattens HWC
        if self.detector is not None:
            flat = images.permute(0, 2, 3, 1).reshape(images.shape[0], -1)
            x = torch.cat([x, F.relu(self.detector(flat))], dim=-1)
        return self.head(F.relu(self.hidden(x)))


class TorchBasicBlock(nn.Module):
    """`isnn_jax.models.resnet.BasicBlock`: two 3x3 convs, GroupNorm(32), projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = SameConv(cin, cout, 3, stride, bias=False)
        self.norm1 = nn.GroupNorm(32, cout, eps=GROUP_NORM_EPSILON)
        self.conv2 = SameConv(cout, cout, 3, 1, bias=False)
        self.norm2 = nn.GroupNorm(32, cout, eps=GROUP_NORM_EPSILON)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(SameConv(cin, cout, 1, stride, bias=False),
                                          nn.GroupNorm(32, cout, eps=GROUP_NORM_EPSILON))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))."""
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        residual = x if self.shortcut is None else self.shortcut(x)
        return F.relu(y + residual)


class TorchResNet18(nn.Module):
    """`isnn_jax.models.ResNet18` (CIFAR stem, GroupNorm) in PyTorch."""

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int],
                 stage_sizes: Sequence[int] = (2, 2, 2, 2), width: int = 64,
                 input_offset: bool = False) -> None:
        super().__init__()
        height, wide, channels = image_shape
        self.offset = nn.Parameter(torch.zeros(channels, height, wide)) if input_offset else None
        self.stem = SameConv(channels, width, 3, bias=False)
        self.stem_norm = nn.GroupNorm(32, width, eps=GROUP_NORM_EPSILON)
        blocks, cin = [], width
        for stage, count in enumerate(stage_sizes):
            for block in range(count):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(TorchBasicBlock(cin, width * 2**stage, stride))
                cin = width * 2**stage
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of NCHW images."""
        x = images if self.offset is None else images + self.offset
        x = F.relu(self.stem_norm(self.stem(x)))
        x = self.blocks(x)
        return self.head(x.mean(dim=(2, 3)))


def build_torch_model(model_config: Mapping[str, Any], num_classes: int,
                      image_shape: tuple[int, int, int]) -> nn.Module:
    """The PyTorch twin of `isnn_jax.models.build_model(model_config, num_classes)`."""
    name = model_config["name"]
    if name == "small_cnn":
        return TorchSmallCNN(num_classes, image_shape, tuple(model_config["features"]),
                             int(model_config["hidden"]), int(model_config["detector_features"]),
                             bool(model_config["input_offset"]))
    if name == "resnet18":
        if model_config.get("norm", "group") != "group":
            raise ValueError("the torch reference implements norm='group' only")
        return TorchResNet18(num_classes, image_shape, tuple(model_config["stage_sizes"]),
                             int(model_config["width"]), bool(model_config["input_offset"]))
    raise ValueError(f"no torch reference for model {name!r}")


def _conv_weight(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(kernel, np.float32).transpose(3, 2, 0, 1).copy())


def _dense_weight(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(kernel, np.float32).T.copy())


def _vector(value: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(value, np.float32).copy())


def _set(parameter: torch.Tensor, value: torch.Tensor) -> None:
    if parameter.shape != value.shape:
        raise ValueError(f"shape mismatch: torch {tuple(parameter.shape)} vs flax {tuple(value.shape)}")
    with torch.no_grad():
        parameter.copy_(value)


def _offset(value: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(value, np.float32).transpose(2, 0, 1).copy())


def load_flax_params(model: nn.Module, params: Mapping[str, Any]) -> nn.Module:
    """Copy a Flax parameter tree of the twin model into `model` (in place; returns it)."""
    if isinstance(model, TorchSmallCNN):
        if model.offset is not None:
            _set(model.offset, _offset(params["input_offset"]))
        for index, conv in enumerate(model.convs):
            _set(conv.conv.weight, _conv_weight(params[f"Conv_{index}"]["kernel"]))
            _set(conv.conv.bias, _vector(params[f"Conv_{index}"]["bias"]))
        dense = [model.hidden, model.head]
        if model.detector is not None:
            dense = [model.detector, *dense]
        for index, layer in enumerate(dense):
            _set(layer.weight, _dense_weight(params[f"Dense_{index}"]["kernel"]))
            _set(layer.bias, _vector(params[f"Dense_{index}"]["bias"]))
        return model
    if isinstance(model, TorchResNet18):
        if model.offset is not None:
            _set(model.offset, _offset(params["input_offset"]))
        _set(model.stem.conv.weight, _conv_weight(params["Conv_0"]["kernel"]))
        _set_norm(model.stem_norm, params["GroupNorm_0"])
        for index, block in enumerate(model.blocks):
            tree = params[f"BasicBlock_{index}"]
            _set(block.conv1.conv.weight, _conv_weight(tree["Conv_0"]["kernel"]))
            _set_norm(block.norm1, tree["GroupNorm_0"])
            _set(block.conv2.conv.weight, _conv_weight(tree["Conv_1"]["kernel"]))
            _set_norm(block.norm2, tree["GroupNorm_1"])
            if block.shortcut is not None:
                _set(block.shortcut[0].conv.weight, _conv_weight(tree["Conv_2"]["kernel"]))
                _set_norm(block.shortcut[1], tree["GroupNorm_2"])
        _set(model.head.weight, _dense_weight(params["Dense_0"]["kernel"]))
        _set(model.head.bias, _vector(params["Dense_0"]["bias"]))
        return model
    raise TypeError(f"cannot load Flax parameters into {type(model).__name__}")


def _set_norm(norm: nn.GroupNorm, tree: Mapping[str, Any]) -> None:
    _set(norm.weight, _vector(tree["scale"]))
    _set(norm.bias, _vector(tree["bias"]))


# --- the views and the objective -------------------------------------------------------------

def rademacher_patterns(count: int, shape: tuple[int, int, int], epsilon: float,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """`count` fresh patterns epsilon * (+-1), NCHW (shape is CHW), on the generator's device."""
    device = generator.device if generator is not None else None
    signs = torch.randint(0, 2, (count, *shape), generator=generator, dtype=torch.int8,
                          device=device)
    return (signs.to(torch.float32) * 2.0 - 1.0) * epsilon


def make_views(images: torch.Tensor, licence_pattern: torch.Tensor, near_patterns: torch.Tensor | None,
               epsilon: float, wrong_views: int, weights: Mapping[str, float],
               generator: torch.Generator | None = None,
               wrong_patterns: torch.Tensor | None = None,
               near_choice: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Legal, clean, wrong-key and near-key views of NCHW images, in `isnn_jax.protection.step`'s order.

    `licence_pattern` (CHW) and `near_patterns` (KCHW) come from JAX; wrong-key patterns and the
    near-key choice are drawn from `generator` unless given.
    """
    batch = images.shape[0]
    views = {"legal": torch.clamp(images + licence_pattern, 0.0, 1.0)}
    if weights.get("clean", 0.0) > 0:
        views["clean"] = images
    if wrong_views > 0:
        if wrong_patterns is None:
            wrong_patterns = rademacher_patterns(wrong_views * batch, tuple(images.shape[1:]),
                                                 epsilon, generator)
        tiled = images.repeat(wrong_views, 1, 1, 1)
        views["wrong"] = torch.clamp(tiled + wrong_patterns, 0.0, 1.0)
    if near_patterns is not None and near_patterns.shape[0] > 0 and weights.get("near", 0.0) > 0:
        if near_choice is None:
            near_choice = torch.randint(0, near_patterns.shape[0], (batch,), generator=generator,
                                        device=images.device)
        views["near"] = torch.clamp(images + near_patterns[near_choice], 0.0, 1.0)
    return views


def uniform_kl(logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(uniform || softmax(logits))."""
    return (-math.log(logits.shape[-1]) - F.log_softmax(logits, dim=-1).mean(dim=-1)).mean()


def output_variance(logits: torch.Tensor) -> torch.Tensor:
    """Batch variance (population) of the centred logits, summed over classes."""
    centred = logits - logits.mean(dim=-1, keepdim=True)
    return ((centred - centred.mean(dim=0)) ** 2).mean(dim=0).sum()


ILLEGAL_LOSSES: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "uniform": uniform_kl,
    "constant": output_variance,
    "uniform_constant": lambda logits: uniform_kl(logits) + output_variance(logits),
}


def combined_loss(views: Mapping[str, torch.Tensor], labels: torch.Tensor,
                  weights: Mapping[str, float], illegal_form: str = "uniform_constant",
                  temperature: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`isnn_jax.protection.objective.combined_loss` over the views' logits (loss, detached metrics)."""
    illegal = ILLEGAL_LOSSES[illegal_form]
    legal_loss = F.cross_entropy(views["legal"], labels)
    total = legal_loss
    metrics = {"legal_loss": legal_loss.detach()}
    for name, logits in views.items():
        if name == "legal":
            continue
        term = illegal(logits * temperature)
        total = total + weights.get(name, 0.0) * term
        metrics[f"{name}_loss"] = term.detach()
    with torch.no_grad():
        for name, logits in views.items():
            repeats = logits.shape[0] // labels.shape[0]
            metrics[f"{name}_accuracy"] = (logits.argmax(-1) == labels.repeat(repeats)).float().mean()
    metrics["loss"] = total.detach()
    return total, metrics


def isnn_loss(model: nn.Module, views: Mapping[str, torch.Tensor], labels: torch.Tensor,
              weights: Mapping[str, float], illegal_form: str = "uniform_constant",
              temperature: float = 1.0, memory_format: torch.memory_format = torch.channels_last,
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One fused forward pass over every view (as the JAX step does), then the combined loss."""
    sizes = [view.shape[0] for view in views.values()]
    fused = torch.cat(list(views.values())).contiguous(memory_format=memory_format)
    logits = model(fused)
    return combined_loss(dict(zip(views, torch.split(logits, sizes))), labels, weights,
                         illegal_form, temperature)


class TorchIsnnStep:
    """The PyTorch ISNN train step: views, fused forward, combined loss, backward, Adam."""

    def __init__(self, model: nn.Module, learning_rate: float, licence_pattern: np.ndarray,
                 near_patterns: np.ndarray | None, epsilon: float, wrong_views: int,
                 weights: Mapping[str, float], illegal_form: str = "uniform_constant",
                 seed: int = 0, memory_format: torch.memory_format = torch.channels_last) -> None:
        """Patterns are HWC / KHWC NumPy arrays taken from JAX; `memory_format` of activations."""
        self.memory_format = memory_format
        self.model = model.to(memory_format=memory_format)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        self.licence_pattern = to_torch_images(np.asarray(licence_pattern)[None])[0]
        self.near_patterns = None if near_patterns is None else to_torch_images(near_patterns)
        self.epsilon, self.wrong_views = float(epsilon), int(wrong_views)
        self.weights, self.illegal_form = dict(weights), illegal_form
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step on clean NCHW images; returns detached metrics."""
        views = make_views(images, self.licence_pattern, self.near_patterns, self.epsilon,
                           self.wrong_views, self.weights, self.generator)
        loss, metrics = isnn_loss(self.model, views, labels, self.weights, self.illegal_form,
                                  memory_format=self.memory_format)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return metrics


class TorchPlainStep:
    """A plain supervised step (cross-entropy, Adam) on the given NCHW images."""

    def __init__(self, model: nn.Module, learning_rate: float,
                 memory_format: torch.memory_format = torch.channels_last) -> None:
        self.memory_format = memory_format
        self.model = model.to(memory_format=memory_format)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step; returns the detached loss."""
        loss = F.cross_entropy(self.model(images.contiguous(memory_format=self.memory_format)), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}
