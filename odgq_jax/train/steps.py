"""The compiled train and eval steps, their loss and their metrics.

(No `from __future__ import annotations` here: clu reads the metric classes from the annotations.)

`train_step(state, batch)` and `eval_step(state, batch)` are pure functions; `compile_steps` jits them
once over the device mesh (batch sharded on `data`, state replicated and donated).
"""

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from clu import metrics
from jax.sharding import Mesh

from odgq_jax import parallel
from odgq_jax.train.state import TrainState


def cross_entropy_loss(logits: jax.Array, labels: jax.Array,
                       label_smoothing: float = 0.0) -> jax.Array:
  """Per-example cross-entropy -sum_c y_c log softmax(z)_c, with y = (1 - s) onehot + s / C."""
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Accuracy
  learning_rate: metrics.LastValue.from_output("learning_rate")


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Accuracy


def train_step(state: TrainState, batch: dict[str, jax.Array], *,
               learning_rate_fn: Callable[[Any], Any],
               label_smoothing: float) -> tuple[TrainState, TrainMetrics]:
  """One SGD step of natural (quantization-aware) training on the global batch."""

  def loss_fn(params):
    logits, new_model_state = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
        mutable=["batch_stats"])
    loss = cross_entropy_loss(logits, batch["label"], label_smoothing).mean()
    return loss, (logits, new_model_state["batch_stats"])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  step_metrics = TrainMetrics.single_from_model_output(
      loss=loss, logits=logits, labels=batch["label"],
      learning_rate=learning_rate_fn(state.step))
  return new_state, step_metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array]) -> EvalMetrics:
  """Clean loss and accuracy in eval mode (BatchNorm running statistics); padding is masked out."""
  logits = state.apply_fn(state.variables, batch["image"], train=False)
  return EvalMetrics.single_from_model_output(
      loss=cross_entropy_loss(logits, batch["label"]), logits=logits, labels=batch["label"],
      mask=batch["mask"])


def compile_steps(mesh: Mesh, learning_rate_fn: Callable[[Any], Any],
                  label_smoothing: float = 0.0) -> tuple[Callable[..., Any], Callable[..., Any]]:
  """Returns (train_step, eval_step) jitted over `mesh`; the train step donates the state."""
  replicated = parallel.replicated_sharding(mesh)
  data = parallel.batch_sharding(mesh)
  jit_train_step = jax.jit(
      functools.partial(train_step, learning_rate_fn=learning_rate_fn,
                        label_smoothing=label_smoothing),
      in_shardings=(replicated, data), out_shardings=(replicated, replicated),
      donate_argnums=(0,))
  jit_eval_step = jax.jit(eval_step, in_shardings=(replicated, data), out_shardings=replicated)
  return jit_train_step, jit_eval_step
