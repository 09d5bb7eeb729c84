"""Quantized convolution and dense layers for quantization-aware training.

Each layer fake-quantizes its input with `input_quantizer` and its kernel with `weight_quantizer`,
then applies the float convolution or matrix product to the quantized operands (simulated
quantization, Jacob et al. 2018, "Quantization and training of neural networks for efficient
integer-arithmetic-only inference"). Gradients pass through the quantizers' straight-through
estimators.

Compute dtype (`dtype`, float32 or bfloat16): the kernel and the quantizers' parameters are float32
parameters; the quantizers run in float32 (a bfloat16 input is widened exactly), so every element
gets the integer level float32 gives it, and their outputs are then rounded to `dtype`, in which the
convolution or product runs (mixed-precision training, Micikevicius et al. 2018).

Parameter names: the kernel is `kernel` (Flax layout, output channel last), the bias `bias`, and a
quantizer's learnable parameters are `input_<name>` / `weight_<name>` (e.g. `input_step` for LSQ,
`input_alpha` for PACT), so that weight decay applied to `kernel` params only leaves them alone; a
switchable-precision model keeps one set per precision, `input_step_4bit` etc.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

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


def quantizer_param_names(quantizer: Quantizer, x: jax.Array, prefix: str,
                          suffix: str = "") -> dict[str, str]:
  """{name: Flax param name `<prefix>_<name><suffix>`} of `quantizer`'s learnable params for the
  input `x`."""
  return {name: f"{prefix}_{name}{suffix}" for name in jax.eval_shape(quantizer.init_params, x)}


def quantize_with_params(module: nn.Module, quantizer: Quantizer, x: jax.Array,
                         prefix: str, suffix: str = "") -> jax.Array:
  """Returns `quantizer(x, params)`, its learnable params being the Flax params
  `<prefix>_<name><suffix>`.

  The params are created in `module` and initialised from `x` by `quantizer.init_params` at
  `init` time (data-dependent, e.g. LSQ's step 2 mean|x| / sqrt(Qp)).
  """
  params = {
      name: module.param(param_name, lambda rng, name=name: quantizer.init_params(x)[name])
      for name, param_name in quantizer_param_names(quantizer, x, prefix, suffix).items()
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
    dtype: the dtype of the convolution or product and of the output (keyword-only).
  """
  features: int
  weight_quantizer: Quantizer
  input_quantizer: Quantizer
  use_bias: bool
  kernel_init: Initializer
  quantizer_param_suffix: str = dataclasses.field(default="", kw_only=True)
  dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)

  def quantized_operands(self, x: jax.Array,
                         kernel_shape: Sequence[int]) -> tuple[jax.Array, jax.Array]:
    """Returns the quantized input and the quantized kernel (`quantized_kernel`), both quantized
    in float32 and then cast to `dtype`."""
    kernel = self.quantized_kernel(kernel_shape)
    x = quantize_with_params(self, self.input_quantizer, x.astype(jnp.float32), "input",
                             self.quantizer_param_suffix)
    return x.astype(self.dtype), kernel.astype(self.dtype)

  def quantized_kernel(self, kernel_shape: Sequence[int]) -> jax.Array:
    """Creates `kernel` (float32) and returns it quantized by `weight_quantizer`, in float32.

    An export's forward pass replaces this method by one that reads the integer weights
    (`odgq_jax/export/integer_model.py`); everything else runs as written here.
    """
    kernel = self.param(KERNEL_PARAM_NAME, self.kernel_init, tuple(kernel_shape), jnp.float32)
    return quantize_with_params(self, self.weight_quantizer, kernel, "weight",
                                self.quantizer_param_suffix)

  def add_bias(self, y: jax.Array) -> jax.Array:
    """Adds the bias `bias` (a float32 parameter initialised to zero, added in y's dtype) if
    `use_bias`."""
    if not self.use_bias:
      return y
    return y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(
        y.dtype)


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
