"""Signed symmetric uniform weight quantization with an abs-max scale."""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from odgq_jax.quant.base import (IntegerTensor, Params, Quantizer, check_bits, check_choice,
                                 integer_tensor, output_channel_axes, register)


def symmetric_levels(w: jax.Array, scale: jax.Array, max_level: int) -> jax.Array:
  """The integer levels clip(round(w / scale), -max_level, max_level), as floats."""
  return jnp.clip(jnp.round(w / scale), -max_level, max_level)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def symmetric_quantize_ste(w: jax.Array, scale: jax.Array, max_level: int) -> jax.Array:
  """clip(round(w / scale), -max_level, max_level) * scale, with gradient 1 w.r.t. w.

  The scale is treated as a constant: its cotangent is zero.
  """
  return symmetric_levels(w, scale, max_level) * scale


def _symmetric_quantize_fwd(w, scale, max_level):
  return symmetric_quantize_ste(w, scale, max_level), scale


def _symmetric_quantize_bwd(max_level, scale, grad_out):
  del max_level
  return grad_out, jnp.zeros_like(scale)


symmetric_quantize_ste.defvjp(_symmetric_quantize_fwd, _symmetric_quantize_bwd)


@register("uniform")
@dataclasses.dataclass(frozen=True)
class SymmetricUniform(Quantizer):
  """Signed symmetric k-bit weight quantizer with an abs-max scale (per output channel).

  Forward, with M = 2^(k-1) - 1 and s = max|w| / M (the max over all axes but the last, the
  output channel, when `per_channel`, else over the whole tensor; s = 1 where max|w| = 0):
    q = clip(round(w / s), -M, M) * s,
  so each output channel takes at most 2^k - 1 values, including +-max|w|.
  Backward (identity straight-through estimator, Bengio et al. 2013, "Estimating or propagating
  gradients through stochastic neurons"): dq/dw = 1; s is treated as a constant.
  Abs-max symmetric quantization as in Jacob et al. 2018, "Quantization and training of neural
  networks for efficient integer-arithmetic-only inference" (there with per-tensor scales).

  Attributes:
    bits: bit-width k, in [2, 8].
    per_channel: one scale per output channel (last axis) if True, one for the tensor if False.
  """
  bits: int
  per_channel: bool = True

  def __post_init__(self):
    check_bits(self.bits, "uniform")
    check_choice(self.per_channel, "per_channel", (True, False), "uniform")

  @property
  def max_level(self) -> int:
    """The largest integer level M = 2^(k-1) - 1."""
    return 2**(self.bits - 1) - 1

  def channel_scale(self, x: jax.Array) -> jax.Array:
    """s = max|x| / M per output channel (keepdims), or for the whole tensor; 1 where max|x| = 0."""
    abs_max = jnp.max(jnp.abs(x), axis=output_channel_axes(x, self.per_channel), keepdims=True)
    return jnp.where(abs_max > 0, abs_max / self.max_level, jnp.ones_like(abs_max))

  def __call__(self, x: jax.Array, params: Params | None = None) -> jax.Array:
    del params
    return symmetric_quantize_ste(x, self.channel_scale(x), self.max_level)

  def integer_form(self, x: jax.Array, params: Params | None = None) -> IntegerTensor:
    del params
    scale = self.channel_scale(x)
    return integer_tensor(symmetric_levels(x, scale, self.max_level), -self.max_level, scale,
                          self.bits)
