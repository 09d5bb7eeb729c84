"""Learning-rate schedule and optimizer: SGD (Nesterov) or Adam, with warm-up + cosine decay.

`config.optimizer`: "sgd", SGD with momentum `config.momentum` (Nesterov if `config.nesterov`), the
ResNet recipe; or "adam", Adam (Kingma & Ba 2015, beta1 0.9, beta2 0.999), which trains binary
networks better than SGD: its second moment revives latent weights whose gradient the sign's
straight-through estimator has starved (Liu et al. ICML 2021, "How do Adam and training strategies
help BNNs optimization?").

Weight decay is applied only to conv and dense kernels (parameters named `kernel`), never to
BatchNorm scales/biases, layer biases or quantizer parameters (PACT's `alpha`, LSQ's `step`), as in
the standard ResNet recipe (Goyal et al. 2017, "Accurate, Large Minibatch SGD").
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import ml_collections
import optax

from odgq_jax import models

OPTIMIZERS = ("sgd", "adam")


def create_learning_rate_fn(config: ml_collections.ConfigDict,
                            steps_per_epoch: int) -> optax.Schedule:
  """Linear warm-up from 0 to `config.learning_rate` over `config.warmup_epochs`, then cosine to 0.

  lr(t) = peak * t / T_w                                  for t < T_w
  lr(t) = peak * (1 + cos(pi * (t - T_w) / (T - T_w))) / 2  for T_w <= t <= T
  with T = num_epochs * steps_per_epoch (Loshchilov & Hutter 2017, SGDR).
  """
  total_steps = int(config.num_epochs * steps_per_epoch)
  warmup_steps = int(config.warmup_epochs * steps_per_epoch)
  if not 0 <= warmup_steps < total_steps:
    raise ValueError(
        f"warmup_epochs={config.warmup_epochs} must be >= 0 and shorter than "
        f"num_epochs={config.num_epochs}")
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup_steps,
      decay_steps=total_steps, end_value=0.0)


def weight_decay_mask(params: Any) -> Any:
  """True for the leaves that get weight decay: conv and dense kernels."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == models.KERNEL_PARAM_NAME, params)


def create_optimizer(config: ml_collections.ConfigDict,
                     learning_rate_fn: Callable[[Any], Any]) -> optax.GradientTransformation:
  """`config.optimizer` (module doc), with L2 weight decay (wd * kernel) added to the kernel
  gradients before it.

  Raises:
    ValueError: `config.optimizer` is not one of OPTIMIZERS.
  """
  if config.optimizer == "sgd":
    update = optax.sgd(learning_rate_fn, momentum=config.momentum, nesterov=config.nesterov)
  elif config.optimizer == "adam":
    update = optax.adam(learning_rate_fn)
  else:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay, mask=weight_decay_mask), update)
