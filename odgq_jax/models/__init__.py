"""Quantized image classifiers by name: `create_model("resnet20", num_classes=10, ...)`.

Every model maps float32 images [N, H, W, C] in [0, 1] to float32 logits [N, num_classes]:
`model.apply(variables, images, train=train, mutable=["batch_stats"] if train else False)`.
See `common.QuantizedClassifier` for the quantization rules and the compute dtype, `layers` for
parameter names and `bireal` for the binary networks.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from odgq_jax import quant
from odgq_jax.models.bireal import BiRealNet18, BinaryResNet20
from odgq_jax.models.common import (CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD,
                                    ModuleDef, QuantizedClassifier, init_variables)
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
    "binary_resnet20": BinaryResNet20,
    "birealnet18": BiRealNet18,
    "tiny": TinyCNN,
}

# `config.compute_dtype` -> the dtype of the activations and convolutions (`QuantizedClassifier`).
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

_QUANTIZER_FIELDS = ("weight_quantizer", "act_quantizer", "first_last_weight_quantizer",
                     "first_last_act_quantizer")
_HIDDEN_QUANTIZER_FIELDS = ("weight_quantizer", "act_quantizer")


def model_options(name: str) -> tuple[str, ...]:
  """The options of the registered model `name` beyond those every model has, settable as
  `config.model.<option>` (e.g. ("rprelu",) for the binary models; () for most)."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
  constructor = MODELS[name]
  cls = constructor.func if isinstance(constructor, functools.partial) else constructor
  bound = set(constructor.keywords) if isinstance(constructor, functools.partial) else set()
  shared = {field.name for field in dataclasses.fields(QuantizedClassifier)}
  return tuple(field.name for field in dataclasses.fields(cls)
               if field.name not in shared | bound | {"parent", "name"})


def create_model(name: str, *, num_classes: int, weight_quantizer: quant.Quantizer,
                 act_quantizer: quant.Quantizer, first_last_weight_quantizer: quant.Quantizer,
                 first_last_act_quantizer: quant.Quantizer,
                 input_mean: Sequence[float] = CIFAR10_MEAN,
                 input_std: Sequence[float] = CIFAR10_STD,
                 switchable_bits: Sequence[int] = (), compute_dtype: str = "float32",
                 **options: Any) -> nn.Module:
  """Builds the registered model `name`; see `QuantizedClassifier` for the arguments.

  `compute_dtype` is a name from COMPUTE_DTYPES; `options` are the model's own options
  (`model_options(name)`).

  Raises:
    ValueError: unknown name (the message lists the registered ones), an unknown compute dtype, an
      option the model does not have, or `switchable_bits` that are not at least two distinct
      bit-widths the hidden-layer quantizers accept.
  """
  unknown = set(options) - set(model_options(name))
  if unknown:
    raise ValueError(f"model {name!r} has no option(s) {sorted(unknown)}; its options: "
                     f"{sorted(model_options(name))}")
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, got "
                     f"{compute_dtype!r}")
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
                      switchable_bits=switchable_bits, dtype=COMPUTE_DTYPES[compute_dtype],
                      **options)


def create_model_from_config(model_config: ml_collections.ConfigDict, num_classes: int,
                             compute_dtype: str = "float32") -> nn.Module:
  """Builds the model described by `model_config`, computing in `compute_dtype`.

  Its fields: `name`; `weight_quantizer`, `act_quantizer`, `first_last_weight_quantizer`,
  `first_last_act_quantizer`, each the arguments of `quant.make_quantizer`, e.g.
  {"name": "uniform", "bits": 4} or {"name": "none"}; optionally `input_mean`, `input_std`
  (CIFAR-10's by default); optionally `switchable_bits` (a switchable-precision model, for
  Double-Win Quant); any other field is one of the model's own options (`model_options`, e.g.
  `rprelu`), and a field that is none of these is an error.
  """
  quantizers = {field: quant.make_quantizer(**model_config[field]) for field in _QUANTIZER_FIELDS}
  known = {"name", *_QUANTIZER_FIELDS}
  rest = {field: model_config[field] for field in model_config if field not in known}
  return create_model(model_config.name, num_classes=num_classes, compute_dtype=compute_dtype,
                      **quantizers, **rest)


def create_model_for_run(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """The model of a run's config: `config.model`, computing in `config.compute_dtype` (float32 for
  a saved config that has no such field)."""
  return create_model_from_config(config.model, num_classes,
                                  config.get("compute_dtype", "float32"))


def is_binary(model_config: ml_collections.ConfigDict) -> bool:
  """Whether the model described by `model_config` is a binary network: its hidden layers'
  weight or activation quantizer (`weight_quantizer`, `act_quantizer`) is the 1-bit `binary`
  quantizer. The evaluation adds PGD++ for binary networks."""
  return any(isinstance(quant.make_quantizer(**model_config[field]), quant.Binary)
             for field in _HIDDEN_QUANTIZER_FIELDS)


__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "COMPUTE_DTYPES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KERNEL_PARAM_NAME",
    "MODELS",
    "QuantConv",
    "QuantDense",
    "QuantizedClassifier",
    "create_model",
    "create_model_for_run",
    "create_model_from_config",
    "init_variables",
    "is_binary",
    "model_options",
]
