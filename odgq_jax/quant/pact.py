"""PACT: unsigned activation quantization with a learnable clipping level."""
from __future__ import annotations

import dataclasses
import functools
import numbers

import jax
import jax.numpy as jnp

from odgq_jax.quant.base import (IntegerTensor, Params, Quantizer, check_bits, get_param,
                                 integer_tensor, param_dtype, register)


def pact_levels(x: jax.Array, alpha: jax.Array, levels: int) -> jax.Array:
  """The integer levels round(clip(x, 0, alpha) * levels / alpha), as floats in x's dtype."""
  return jnp.round(jnp.clip(x, 0, alpha) * (levels / alpha))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def pact_quantize_ste(x: jax.Array, alpha: jax.Array, levels: int) -> jax.Array:
  """round(clip(x, 0, alpha) * levels / alpha) * alpha / levels, with PACT's STE.

  Gradients: dy/dx = 1 if 0 <= x <= alpha else 0; dy/dalpha = 1 if x > alpha else 0 (summed
  over the elements of x into alpha's scalar shape and dtype). The result has x's dtype.
  """
  alpha_x = alpha.astype(x.dtype)
  return pact_levels(x, alpha_x, levels) * (alpha_x / levels)


def _pact_fwd(x, alpha, levels):
  return pact_quantize_ste(x, alpha, levels), (x, alpha)


def _pact_bwd(levels, residuals, grad_out):
  del levels
  x, alpha = residuals
  alpha_x = alpha.astype(x.dtype)
  grad_x = jnp.where((x >= 0) & (x <= alpha_x), grad_out, jnp.zeros_like(grad_out))
  grad_alpha = jnp.sum(jnp.where(x > alpha_x, grad_out, jnp.zeros_like(grad_out)),
                       dtype=alpha.dtype)
  return grad_x, grad_alpha.reshape(alpha.shape)


pact_quantize_ste.defvjp(_pact_fwd, _pact_bwd)


@register("pact")
@dataclasses.dataclass(frozen=True)
class PACT(Quantizer):
  """PACT k-bit unsigned activation quantizer with a learnable clipping level alpha.

  Choi et al. 2018, "PACT: Parameterized clipping activation for quantized neural networks".

  Forward, with n = 2^k - 1:
    y = round(clip(x, 0, alpha) * n / alpha) * alpha / n,
  so y takes at most 2^k values {i * alpha / n : i = 0..n}.
  Backward (PACT's straight-through estimator, eq. 3-4):
    dy/dx = 1 if 0 <= x <= alpha else 0,
    dy/dalpha = 1 if x > alpha else 0.

  Learnable parameters: {"alpha": scalar}, which must stay > 0 (PACT regularises it with L2
  weight decay; nothing here clips it).

  Attributes:
    bits: bit-width k, in [2, 8].
    init_alpha: initial clipping level, > 0.
  """
  bits: int
  init_alpha: float = 6.0

  def __post_init__(self):
    check_bits(self.bits, "pact")
    if (not isinstance(self.init_alpha, numbers.Real) or isinstance(self.init_alpha, bool)
        or not self.init_alpha > 0):
      raise ValueError(
          f"quantizer 'pact': init_alpha must be a real number > 0, got {self.init_alpha!r}")

  def init_params(self, x: jax.Array) -> dict[str, jax.Array]:
    return {"alpha": jnp.asarray(self.init_alpha, dtype=param_dtype(x))}

  def __call__(self, x: jax.Array, params: Params | None = None) -> jax.Array:
    alpha = get_param(params, "alpha", "pact")
    return pact_quantize_ste(x, alpha, 2**self.bits - 1)

  def integer_form(self, x: jax.Array, params: Params | None = None) -> IntegerTensor:
    alpha = get_param(params, "alpha", "pact").astype(x.dtype)
    levels = 2**self.bits - 1
    return integer_tensor(pact_levels(x, alpha, levels), 0, alpha / levels, self.bits)
