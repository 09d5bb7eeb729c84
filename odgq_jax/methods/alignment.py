"""Alignment losses between the predictions on natural and on perturbed inputs.

Each maps the natural logits z0 and the perturbed logits z [N, K] to a scalar (mean over the
batch); all are zero when z0 == z. With p = softmax(z0), q = softmax(z):

| name           | loss                                    | used by                          |
|----------------|-----------------------------------------|----------------------------------|
| "kl"           | KL(p || q) = sum_c p_c (log p_c - log q_c) | TRADES (Zhang et al. 2019), ODG-Q |
| "symmetric_kl" | (KL(p || q) + KL(q || p)) / 2            | ODG-Q option                     |
| "logit_mse"    | mean_c (z0_c - z_c)^2                    | logit pairing (Kannan et al. 2018) |
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

AlignmentFn = Callable[[jax.Array, jax.Array], jax.Array]


def kl_divergence(natural_logits: jax.Array, perturbed_logits: jax.Array) -> jax.Array:
  """Batch mean of KL(softmax(z0) || softmax(z))."""
  log_p = jax.nn.log_softmax(natural_logits)
  log_q = jax.nn.log_softmax(perturbed_logits)
  return jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1))


def symmetric_kl_divergence(natural_logits: jax.Array, perturbed_logits: jax.Array) -> jax.Array:
  """Batch mean of (KL(p || q) + KL(q || p)) / 2."""
  return 0.5 * (kl_divergence(natural_logits, perturbed_logits)
                + kl_divergence(perturbed_logits, natural_logits))


def logit_mse(natural_logits: jax.Array, perturbed_logits: jax.Array) -> jax.Array:
  """Mean over batch and classes of (z0 - z)^2."""
  return jnp.mean(jnp.square(natural_logits - perturbed_logits))


ALIGNMENTS: dict[str, AlignmentFn] = {
    "kl": kl_divergence,
    "symmetric_kl": symmetric_kl_divergence,
    "logit_mse": logit_mse,
}
