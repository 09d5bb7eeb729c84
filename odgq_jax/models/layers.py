"""Quantized convolution and dense layers for quantization-aware training.

Each layer fake-quantizes its input with `input_quantizer` and its kernel with `weight_quantizer`,
then applies the float convolution or matrix product to the quantized operands (simulated
quantization, Jacob et al. 2018, "Quantization and training of neural networks for efficient
integer-arithmetic-only inference"). Gradients pass through the quantizers' straight-through
estimators.

Parameter names: the kernel is `kernel` (Flax layout, output channel last), the bias `bias`, and a
quantizer's learnable parameters are `input_<name>` / `weight_<name>` (e.g. `input_step` for LSQ,
`input_alpha` for PACT), so that weight decay applied to `kernel` params only leaves them alone; a
switchable-precision model keeps one set per precision, `input_step_4bit` etc.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from odgq_jax.models.conv import conv2d
from odgq_jax.quant import Quantizer

Initializer = Callable[..., jax.Array]

# The name of the conv and dense layers' weight parameter (weight decay and Defensive
# Quantization's penalty select parameters by it).
KERNEL_PARAM_NAME = "kernel"

# He et al. 2015, "Delving deep into rectifiers" (mode fan_out, as in the reference ResNets).
HE_NORMAL_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def quantize_with_params(module: nn.Module, quantizer: Quantizer, x: jax.Array,
                         prefix: str, suffix: str = "") -> jax.Array:
  """Returns `quantizer(x, params)`, its learnable params being the Flax params
  `<prefix>_<name><suffix>`.

  The params are created in `module` and initialised from `x` by `quantizer.init_params` at
  `init` time (data-dependent, e.g. LSQ's step 2 mean|x| / sqrt(Qp)).
  """
  names = jax.eval_shape(quantizer.init_params, x)
  params = {
      name: module.param(f"{prefix}_{name}{suffix}",
                         lambda rng, name=name: quantizer.init_params(x)[name])
      for name in names
  }
  return quantizer(x, params)


class QuantizedLinearLayer(nn.Module):
  """Fields and quantizer plumbing shared by `QuantConv` and `QuantDense`.

  Attributes:
    features: number of output channels.
    weight_quantizer: quantizer of the kernel.
    input_quantizer: quantizer of the layer's input.
    use_bias: whether to add an (unquantized) bias `bias`.
    kernel_init: initializer of `kernel`.
    quantizer_param_suffix: appended to the names of the quantizers' learnable params (one set per
      precision in a switchable-precision model).
  """
  features: int
  weight_quantizer: Quantizer
  input_quantizer: Quantizer
  use_bias: bool
  kernel_init: Initializer
  quantizer_param_suffix: str = dataclasses.field(default="", kw_only=True)

  def quantized_operands(self, x: jax.Array,
                         kernel_shape: Sequence[int]) -> tuple[jax.Array, jax.Array]:
    """Creates `kernel`; returns the quantized input and the quantized kernel."""
    kernel = self.param(KERNEL_PARAM_NAME, self.kernel_init, tuple(kernel_shape))
    suffix = self.quantizer_param_suffix
    return (quantize_with_params(self, self.input_quantizer, x, "input", suffix),
            quantize_with_params(self, self.weight_quantizer, kernel, "weight", suffix))

  def add_bias(self, y: jax.Array) -> jax.Array:
    """Adds the bias `bias` (initialised to zero) if `use_bias`."""
    if not self.use_bias:
      return y
    return y + self.param("bias", nn.initializers.zeros, (self.features,))


class QuantConv(QuantizedLinearLayer):
  """2-D convolution of the quantized NHWC input with the quantized HWIO kernel.

  Attributes (besides `QuantizedLinearLayer`'s):
    kernel_size: (height, width) of the kernel.
    strides: (height, width) strides.
    padding: a `jax.lax.conv_general_dilated` padding ("SAME", "VALID" or ((lo, hi), (lo, hi)));
      None pads kernel_size // 2 on both sides of each axis, as the reference ResNets do.
  """
  use_bias: bool = False
  kernel_init: Initializer = HE_NORMAL_FAN_OUT
  kernel_size: tuple[int, int] = (3, 3)
  strides: tuple[int, int] = (1, 1)
  padding: str | Sequence[tuple[int, int]] | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x, kernel = self.quantized_operands(x, (*self.kernel_size, x.shape[-1], self.features))
    padding = self.padding
    if padding is None:
      padding = [(size // 2, size // 2) for size in self.kernel_size]
    return self.add_bias(conv2d(x, kernel, self.strides, padding))


class QuantDense(QuantizedLinearLayer):
  """Matrix product of the quantized input [..., in] with the quantized kernel [in, out]."""
  use_bias: bool = True
  kernel_init: Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x, kernel = self.quantized_operands(x, (x.shape[-1], self.features))
    return self.add_bias(jnp.dot(x, kernel))
