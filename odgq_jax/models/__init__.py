"""Quantized image classifiers by name: `create_model("resnet20", num_classes=10, ...)`.

Every model maps float32 images [N, H, W, C] in [0, 1] to logits [N, num_classes]:
`model.apply(variables, images, train=train, mutable=["batch_stats"] if train else False)`.
See `common.QuantizedClassifier` for the quantization rules and `layers` for parameter names.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import ml_collections

from odgq_jax import quant
from odgq_jax.models.common import (CIFAR10_MEAN, CIFAR10_STD, ModuleDef, QuantizedClassifier,
                                    init_variables)
from odgq_jax.models.layers import KERNEL_PARAM_NAME, QuantConv, QuantDense
from odgq_jax.models.resnet_cifar import PreActResNet18, ResNet20, ResNet56, WideResNet34x10
from odgq_jax.models.resnet_imagenet import ResNet18, ResNet50
from odgq_jax.models.tiny import TinyCNN
from odgq_jax.models.vgg import VGG7

MODELS: dict[str, ModuleDef] = {
    "resnet20": ResNet20,
    "resnet56": ResNet56,
    "preact_resnet18": PreActResNet18,
    "wrn34_10": WideResNet34x10,
    "vgg7": VGG7,
    "resnet18": ResNet18,
    "resnet50": ResNet50,
    "tiny": TinyCNN,
}

_QUANTIZER_FIELDS = ("weight_quantizer", "act_quantizer", "first_last_weight_quantizer",
                     "first_last_act_quantizer")


def create_model(name: str, *, num_classes: int, weight_quantizer: quant.Quantizer,
                 act_quantizer: quant.Quantizer, first_last_weight_quantizer: quant.Quantizer,
                 first_last_act_quantizer: quant.Quantizer,
                 input_mean: Sequence[float] = CIFAR10_MEAN,
                 input_std: Sequence[float] = CIFAR10_STD,
                 switchable_bits: Sequence[int] = ()) -> nn.Module:
  """Builds the registered model `name`; see `QuantizedClassifier` for the arguments.

  Raises:
    ValueError: unknown name (the message lists the registered ones), or `switchable_bits` that
      are not at least two distinct bit-widths the hidden-layer quantizers accept.
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
  switchable_bits = tuple(switchable_bits)
  if switchable_bits:
    if len(switchable_bits) < 2 or len(set(switchable_bits)) != len(switchable_bits):
      raise ValueError(f"model.switchable_bits must be at least two distinct bit-widths, got "
                       f"{list(switchable_bits)}")
    for bits in switchable_bits:
      quant.with_bits(weight_quantizer, bits)
      quant.with_bits(act_quantizer, bits)
  return MODELS[name](num_classes=num_classes, weight_quantizer=weight_quantizer,
                      act_quantizer=act_quantizer,
                      first_last_weight_quantizer=first_last_weight_quantizer,
                      first_last_act_quantizer=first_last_act_quantizer,
                      input_mean=tuple(input_mean), input_std=tuple(input_std),
                      switchable_bits=switchable_bits)


def create_model_from_config(model_config: ml_collections.ConfigDict,
                             num_classes: int) -> nn.Module:
  """Builds the model described by `model_config`.

  Its fields: `name`; `weight_quantizer`, `act_quantizer`, `first_last_weight_quantizer`,
  `first_last_act_quantizer`, each the arguments of `quant.make_quantizer`, e.g.
  {"name": "uniform", "bits": 4} or {"name": "none"}; optionally `input_mean`, `input_std`
  (CIFAR-10's by default); optionally `switchable_bits` (a switchable-precision model, for
  Double-Win Quant).
  """
  quantizers = {field: quant.make_quantizer(**model_config[field]) for field in _QUANTIZER_FIELDS}
  optional = {
      field: model_config[field]
      for field in ("input_mean", "input_std", "switchable_bits") if field in model_config
  }
  return create_model(model_config.name, num_classes=num_classes, **quantizers, **optional)


__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "KERNEL_PARAM_NAME",
    "MODELS",
    "QuantConv",
    "QuantDense",
    "QuantizedClassifier",
    "create_model",
    "create_model_from_config",
    "init_variables",
]
