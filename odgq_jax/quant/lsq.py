"""LSQ: learned step size quantization of activations and weights."""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from odgq_jax.quant.base import (IntegerTensor, Params, Quantizer, check_bits, check_choice,
                                 get_param, integer_tensor, param_dtype, register)


MIN_STEP = 1e-8  # floor of the step actually used (see LSQ)


def lsq_levels(x: jax.Array, step: jax.Array, min_level: int, max_level: int) -> jax.Array:
  """The integer levels round(clip(x / step, min_level, max_level)), as floats in x's dtype."""
  return jnp.round(jnp.clip(x / step, min_level, max_level))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def lsq_quantize_ste(x: jax.Array, step: jax.Array, min_level: int, max_level: int,
                     grad_scale: jax.Array) -> jax.Array:
  """round(clip(x / step, min_level, max_level)) * step, with LSQ's gradients.

  Gradients, with v = x / step:
    dy/dx = 1 if min_level <= v <= max_level else 0,
    dy/dstep = grad_scale * (round(v) - v if inside, min_level below, max_level above)
  (summed over the elements of x into step's scalar shape and dtype). The result has x's dtype.
  `grad_scale` is a scalar array, not a constant, so that it can depend on a symbolic batch size
  (a batch-polymorphic `jax.export`); its own cotangent is zero.
  """
  step_x = step.astype(x.dtype)
  return lsq_levels(x, step_x, min_level, max_level) * step_x


def _lsq_fwd(x, step, min_level, max_level, grad_scale):
  return lsq_quantize_ste(x, step, min_level, max_level, grad_scale), (x, step, grad_scale)


def _lsq_bwd(min_level, max_level, residuals, grad_out):
  x, step, grad_scale = residuals
  scaled = x / step.astype(x.dtype)
  below = scaled < min_level
  above = scaled > max_level
  inside = ~(below | above)
  grad_x = jnp.where(inside, grad_out, jnp.zeros_like(grad_out))
  d_y_d_step = jnp.where(below, min_level,
                         jnp.where(above, max_level, jnp.round(scaled) - scaled))
  grad_step = grad_scale * jnp.sum(grad_out * d_y_d_step, dtype=step.dtype)
  return grad_x, grad_step.reshape(step.shape), jnp.zeros_like(grad_scale)


lsq_quantize_ste.defvjp(_lsq_fwd, _lsq_bwd)


@register("lsq")
@dataclasses.dataclass(frozen=True)
class LSQ(Quantizer):
  """LSQ k-bit quantizer with a learnable step size s, for activations or weights.

  Esser et al. 2020, "Learned step size quantization" (ICLR).

  Integer range: unsigned (activations) Qn = 0, Qp = 2^k - 1; signed (weights)
  Qn = -2^(k-1), Qp = 2^(k-1) - 1. Either way y takes at most 2^k values.
  Forward, with v = x / s:
    y = round(clip(v, Qn, Qp)) * s.
  Backward (LSQ's straight-through estimator, eq. 3-5):
    dy/dx = 1 if Qn <= v <= Qp else 0,
    dy/ds = g * (round(v) - v if Qn <= v <= Qp; Qn if v < Qn; Qp if v > Qp),
  with the gradient scale g = 1 / sqrt(N * Qp), where N is, as in the paper, the number of
  weights for signed quantizers (N = x.size) and the number of features for unsigned ones:
  the elements per example, x.size / x.shape[0] (the leading axis is the batch axis; N = x.size
  for inputs of rank <= 1). Thus g does not depend on the batch size or on how it is sharded.

  Learnable parameters: {"step": scalar}, initialised to 2 * mean|x| / sqrt(Qp) (1 / Qp when x
  is all zeros). The quantizer uses s = max(|step|, MIN_STEP): an optimizer update that carries
  the parameter below zero would otherwise send every unsigned input to level 0 and cut the step's
  own gradient (Qn = 0), killing the layer for good, as it did to a 10-epoch ODG-Q run at peak
  learning rate 0.2. With |step| the layer keeps working and the gradient keeps flowing.

  Attributes:
    bits: bit-width k, in [2, 8].
    signed: False for activations (unsigned range), True for weights (signed range).
  """
  bits: int
  signed: bool = False

  def __post_init__(self):
    check_bits(self.bits, "lsq")
    check_choice(self.signed, "signed", (True, False), "lsq")

  @property
  def min_level(self) -> int:
    """Qn, the smallest integer level."""
    return -2**(self.bits - 1) if self.signed else 0

  @property
  def max_level(self) -> int:
    """Qp, the largest integer level."""
    return 2**(self.bits - 1) - 1 if self.signed else 2**self.bits - 1

  def grad_scale(self, x: jax.Array) -> float | jax.Array:
    """The step-gradient scale g = 1 / sqrt(N * Qp) for input `x` (see the class docstring); a
    float32 array computed from N where N depends on a symbolic batch size (a signed quantizer in
    a batch-polymorphic `jax.export`)."""
    elements_per_step = x.size if self.signed or x.ndim <= 1 else x.size // x.shape[0]
    if isinstance(elements_per_step, int):
      return 1.0 / math.sqrt(elements_per_step * self.max_level)
    return 1.0 / jnp.sqrt(jnp.asarray(elements_per_step * self.max_level, jnp.float32))

  def init_params(self, x: jax.Array) -> dict[str, jax.Array]:
    mean_abs = jnp.mean(jnp.abs(x), dtype=param_dtype(x))
    step = jnp.where(mean_abs > 0, 2 * mean_abs / math.sqrt(self.max_level), 1 / self.max_level)
    return {"step": step.astype(param_dtype(x))}

  def step_size(self, params: Params | None) -> jax.Array:
    """The step actually used, s = max(|params["step"]|, MIN_STEP)."""
    return jnp.maximum(jnp.abs(get_param(params, "step", "lsq")), MIN_STEP)

  def __call__(self, x: jax.Array, params: Params | None = None) -> jax.Array:
    step = self.step_size(params)
    return lsq_quantize_ste(x, step, self.min_level, self.max_level,
                            jnp.asarray(self.grad_scale(x), step.dtype))

  def integer_form(self, x: jax.Array, params: Params | None = None) -> IntegerTensor:
    step = self.step_size(params).astype(x.dtype)
    return integer_tensor(lsq_levels(x, step, self.min_level, self.max_level), self.min_level,
                          step, self.bits)
