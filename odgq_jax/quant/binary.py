"""Binarization by the sign function, with a choice of straight-through estimators and an optional
learnable per-channel threshold (ReActNet's RSign)."""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from odgq_jax.quant.base import (IntegerTensor, Params, Quantizer, check_choice, get_param,
                                 output_channel_axes, param_dtype, register)


def _sign(x: jax.Array) -> jax.Array:
  """sign(x) with sign(0) = +1, in x's dtype."""
  return jnp.where(x >= 0, jnp.ones_like(x), -jnp.ones_like(x))


def _sign_fwd(x):
  return _sign(x), x


@jax.custom_vjp
def sign_ste_identity(x: jax.Array) -> jax.Array:
  """sign(x) (sign(0) = +1) with the identity straight-through gradient d/dx = 1."""
  return _sign(x)


def _sign_identity_bwd(x, grad_out):
  del x
  return (grad_out,)


sign_ste_identity.defvjp(_sign_fwd, _sign_identity_bwd)


@jax.custom_vjp
def sign_ste_clipped(x: jax.Array) -> jax.Array:
  """sign(x) (sign(0) = +1) with the hardtanh gradient d/dx = 1 if |x| <= 1 else 0."""
  return _sign(x)


def _sign_clipped_bwd(x, grad_out):
  return (jnp.where(jnp.abs(x) <= 1, grad_out, jnp.zeros_like(grad_out)),)


sign_ste_clipped.defvjp(_sign_fwd, _sign_clipped_bwd)


@jax.custom_vjp
def sign_ste_approx_sign(x: jax.Array) -> jax.Array:
  """sign(x) (sign(0) = +1) with Bi-Real Net's gradient d/dx = 2 - 2|x| if |x| < 1 else 0."""
  return _sign(x)


def _sign_approx_sign_bwd(x, grad_out):
  return (grad_out * jnp.maximum(2 - 2 * jnp.abs(x), 0),)


sign_ste_approx_sign.defvjp(_sign_fwd, _sign_approx_sign_bwd)

SIGN_STES: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": sign_ste_identity,
    "clipped": sign_ste_clipped,
    "approx_sign": sign_ste_approx_sign,
}


@register("binary")
@dataclasses.dataclass(frozen=True)
class Binary(Quantizer):
  """1-bit quantizer: the sign, optionally of x shifted by a learnable per-channel threshold, and
  optionally scaled by the per-output-channel mean |x|.

  Courbariaux et al. 2016, "Binarized neural networks: Training deep neural networks with weights
  and activations constrained to +1 or -1"; scaling from Rastegari et al. 2016, "XNOR-Net:
  ImageNet classification using binary convolutional neural networks"; the learnable threshold is
  RSign of Liu et al. 2020, "ReActNet: Towards precise binary neural network with generalized
  activation functions".

  Forward, with t = 0, or t = the learnable threshold (one per channel, the last axis) if
  `learnable_threshold`:
    y = sign(x - t), with sign(0) = +1, so y is in {-1, +1}. With `scale`,
    y = a * sign(x - t), a = mean|x - t| over all axes but the last (the output channel),
  so each output channel takes the values {-a, +a}.
  Backward, by the `ste` option, for d sign(u) / du at u = x - t:
    "identity":    1;
    "clipped":     1 if |u| <= 1 else 0 (the hardtanh STE of BinaryConnect/BNN);
    "approx_sign": 2 - 2|u| if |u| < 1 else 0 (Liu et al. 2018, "Bi-Real Net: Enhancing the
                   performance of 1-bit CNNs with improved representational capability and
                   advanced training algorithm"), the "ApproxSign" of Bi-Real Net and ReActNet.
  dy/dt = -dy/du, summed over all axes but the last. The scale a is a function of x and is
  differentiated normally (da/dx_i = sign(x_i) / n, n the number of elements per output channel),
  as in XNOR-Net's weight gradient. Scaling is meant for weights (Flax layout, output channel
  last; for a rank-1 x it is one scale per element), the threshold for activations (NHWC, one per
  channel).

  Learnable parameters, with `learnable_threshold`: {"threshold": [C]}, initialised to zero (the
  plain sign).

  Attributes:
    ste: the straight-through estimator of the sign: "identity", "clipped" or "approx_sign".
    scale: multiply by the per-output-channel mean |x - t| (XNOR-Net) if True.
    learnable_threshold: binarize x - t with a learnable per-channel t (RSign) if True.
  """
  ste: str = "clipped"
  scale: bool = False
  learnable_threshold: bool = False

  def __post_init__(self):
    check_choice(self.ste, "ste", tuple(SIGN_STES), "binary")
    check_choice(self.scale, "scale", (True, False), "binary")
    check_choice(self.learnable_threshold, "learnable_threshold", (True, False), "binary")

  @property
  def bits(self) -> int:
    """The bit-width, 1."""
    return 1

  def init_params(self, x: jax.Array) -> dict[str, jax.Array]:
    if not self.learnable_threshold:
      return {}
    return {"threshold": jnp.zeros(x.shape[-1:], param_dtype(x))}

  def _shifted(self, x: jax.Array, params: Params | None) -> jax.Array:
    """x - t (x itself without a learnable threshold)."""
    if not self.learnable_threshold:
      return x
    return x - get_param(params, "threshold", "binary").astype(x.dtype)

  def _mean_abs(self, x: jax.Array) -> jax.Array:
    """a = mean|x| per output channel (keepdims)."""
    return jnp.mean(jnp.abs(x), axis=output_channel_axes(x, per_channel=True), keepdims=True)

  def __call__(self, x: jax.Array, params: Params | None = None) -> jax.Array:
    x = self._shifted(x, params)
    signs = SIGN_STES[self.ste](x)
    if not self.scale:
      return signs
    return self._mean_abs(x) * signs

  def integer_form(self, x: jax.Array, params: Params | None = None) -> IntegerTensor:
    """Codes 1 for +1 and 0 for -1, zero point 1/2, scale 2a (2 without `scale`): (code - 1/2) 2a
    is +-a exactly, as the halving and doubling are exact."""
    x = self._shifted(x, params)
    scale = 2 * self._mean_abs(x) if self.scale else jnp.asarray(2, x.dtype)
    return IntegerTensor(codes=(x >= 0).astype(jnp.uint8), zero_point=0.5, scale=scale, bits=1)
