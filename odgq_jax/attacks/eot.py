"""Expectation over transformation (EOT): a deterministic model from a randomised one.

Athalye et al. 2018, "Synthesizing robust adversarial examples" / "Obfuscated gradients give a
false sense of security". A randomised defence (random precision, random input transforms) is a
`random_logits_fn(images, key) -> logits`; its EOT model is the log of the expected softmax,
  logits_fn(x) = log((1 / S) sum_{s=1..S} softmax(random_logits_fn(x, k_s))),
estimated with S = num_samples draws. softmax(logits_fn(x)) is the average predicted distribution,
so the cross-entropy an attack maximises is -log E[p_y], whose gradient
  -E[grad p_y] / E[p_y] = E[(p_y,s / E[p_y]) grad(-log p_y,s)]
is the average of the per-draw cross-entropy gradients weighted by the draws' p_y. Any gradient
attack run on `logits_fn` is thus an EOT attack with S samples per gradient.

Draws are fresh for every input and reproducible: the keys are
  k_1 .. k_S = split(fold_in(key, h(x)), S),
with h(x) a 32-bit hash of the bits of the whole batch x, so every iterate of an attack sees new
draws while `logits_fn` stays a pure function (the same x gives the same logits). The S draws run
sequentially (`lax.map`), so memory does not grow with S; each call costs S forward passes (and a
gradient S backward passes).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from odgq_jax.attacks.losses import LogitsFn

RandomLogitsFn = Callable[[jax.Array, jax.Array], jax.Array]

# An odd multiplier (2^32 / golden ratio) spreading positions over the 32-bit hash.
HASH_MULTIPLIER = 0x9E3779B1


def _input_hash(images: jax.Array) -> jax.Array:
  """A uint32 hash of the bits of `images`: sum_i bits_i * (2i + 1) * HASH_MULTIPLIER mod 2^32."""
  flat = jnp.ravel(jax.lax.stop_gradient(images))
  unsigned = jnp.dtype(f"uint{8 * flat.dtype.itemsize}")
  bits = jax.lax.bitcast_convert_type(flat, unsigned).astype(jnp.uint32)
  weights = (2 * jnp.arange(flat.size, dtype=jnp.uint32) + 1) * jnp.uint32(HASH_MULTIPLIER)
  return jnp.sum(bits * weights, dtype=jnp.uint32)


def log_mean_softmax(draw_logits: jax.Array) -> jax.Array:
  """log((1 / S) sum_s softmax(logits_s)) for logits [S, N, K] of S draws -> [N, K]."""
  return (jax.nn.logsumexp(jax.nn.log_softmax(draw_logits), axis=0)
          - jnp.log(draw_logits.shape[0]))


def expectation_over_transformation(random_logits_fn: RandomLogitsFn, num_samples: int,
                                    key: jax.Array) -> LogitsFn:
  """The EOT model of `random_logits_fn` (see the module docstring).

  Args:
    random_logits_fn: (images [N, ...], key) -> logits [N, K] of one random draw of the model.
    num_samples: S, the number of draws per call (the protocol asks for at least 10).
    key: PRNG key the draws are derived from.

  Returns:
    logits_fn: images [N, ...] -> log of the mean softmax over S draws, [N, K].

  Raises:
    ValueError: if num_samples < 1.
  """
  if num_samples < 1:
    raise ValueError(f"eot: num_samples must be at least 1, got {num_samples}")

  def logits_fn(images):
    draw_keys = jax.random.split(jax.random.fold_in(key, _input_hash(images)), num_samples)
    return log_mean_softmax(
        jax.lax.map(lambda draw_key: random_logits_fn(images, draw_key), draw_keys))

  return logits_fn
