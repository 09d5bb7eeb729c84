"""DoReFa-Net weight quantization."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from odgq_jax.quant.base import IntegerTensor, Params, Quantizer, check_bits, register


@jax.custom_vjp
def round_ste(x: jax.Array) -> jax.Array:
  """round(x) (half to even), with the identity straight-through gradient d/dx = 1."""
  return jnp.round(x)


def _round_fwd(x):
  return jnp.round(x), None


def _round_bwd(residual, grad_out):
  del residual
  return (grad_out,)


round_ste.defvjp(_round_fwd, _round_bwd)


@register("dorefa")
@dataclasses.dataclass(frozen=True)
class DoReFaWeight(Quantizer):
  """DoReFa-Net k-bit weight quantizer.

  Zhou et al. 2016, "DoReFa-Net: Training low bitwidth convolutional neural networks with low
  bitwidth gradients", eq. 9.

  Forward, with n = 2^k - 1, quantize_k(r) = round(n * r) / n and the max over the whole tensor:
    w_q = 2 * quantize_k(tanh(w) / (2 * max|tanh(w)|) + 1/2) - 1,
  so w_q takes values in {2i/n - 1 : i = 0..n} (no zero level), computed as (i - n/2) * (2/n),
  the integer form's product (`integer_form`: codes i, zero point n/2, scale 2/n). Where
  max|tanh(w)| = 0 (w all zero) it is replaced by 1.
  Backward: straight-through through the round only, d quantize_k(r) / dr = 1; tanh and the max
  are differentiated normally.

  Attributes:
    bits: bit-width k, in [2, 8].
  """
  bits: int

  def __post_init__(self):
    check_bits(self.bits, "dorefa")

  @property
  def levels(self) -> int:
    """n = 2^k - 1, the largest code."""
    return 2**self.bits - 1

  def unit_interval(self, x: jax.Array) -> jax.Array:
    """tanh(x) / (2 max|tanh(x)|) + 1/2, in [0, 1] (max|tanh(x)| = 0 replaced by 1)."""
    tanh_x = jnp.tanh(x)
    max_abs = jnp.max(jnp.abs(tanh_x))
    max_abs = jnp.where(max_abs > 0, max_abs, jnp.ones_like(max_abs))
    return tanh_x / (2 * max_abs) + 0.5

  def __call__(self, x: jax.Array, params: Params | None = None) -> jax.Array:
    del params
    codes = round_ste(self.levels * self.unit_interval(x))
    return (codes - self.levels / 2) * (2 / self.levels)

  def integer_form(self, x: jax.Array, params: Params | None = None) -> IntegerTensor:
    del params
    codes = jnp.round(self.levels * self.unit_interval(x)).astype(jnp.uint8)
    return IntegerTensor(codes=codes, zero_point=self.levels / 2,
                         scale=jnp.asarray(2 / self.levels, x.dtype), bits=self.bits)
