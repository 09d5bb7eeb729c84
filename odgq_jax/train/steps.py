"""The compiled train and eval steps and their metrics.

(No `from __future__ import annotations` here: clu reads the metric classes from the annotations.)

`train_step(state, batch)` (what it trains on is the training method's choice) and
`eval_step(state, batch)` are pure functions; `compile_steps` jits them once over the device mesh:
they take the batch split on `data` (`parallel.make_global_batch`) and the state as
`create_train_state` lays it out (per-example method state split like the batch, the rest
replicated), and the train step donates the state and returns the new one in the same layout.
The train metrics carry the non-finite guard's record (`nonfinite.py`).
"""

from typing import Any, Callable

import flax
import jax
from clu import metrics
from jax.sharding import Mesh

from odgq_jax import parallel
from odgq_jax.methods.base import TrainingMethod, cross_entropy
from odgq_jax.train import nonfinite
from odgq_jax import train_state as state_lib
from odgq_jax.train_state import TrainState


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Accuracy
  learning_rate: metrics.LastValue.from_output("learning_rate")
  nonfinite: nonfinite.FirstNonFinite

  def compute(self) -> dict[str, jax.Array]:
    """The logged scalars; the `nonfinite` record is checked, not logged (`nonfinite.describe`)."""
    return {k: v for k, v in super().compute().items() if k != "nonfinite"}


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Accuracy


def train_step(state: TrainState, batch: dict[str, jax.Array], *, method: TrainingMethod,
               learning_rate_fn: Callable[[Any], Any]) -> tuple[TrainState, TrainMetrics]:
  """One minibatch of `method` (one optimizer update, or m for replaying methods)."""
  learning_rate = learning_rate_fn(state.step)
  new_state, output = method.update(state, batch, state.step_rng())
  step_metrics = TrainMetrics.single_from_model_output(
      loss=output.loss, logits=output.logits, labels=batch["label"], learning_rate=learning_rate,
      step=new_state.step, variables=new_state.variables)
  return new_state, step_metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array]) -> EvalMetrics:
  """Clean loss and accuracy in eval mode (BatchNorm running statistics); padding is masked out."""
  logits = state.apply_fn(state.variables, batch["image"], train=False)
  return EvalMetrics.single_from_model_output(
      loss=cross_entropy(logits, batch["label"]), logits=logits, labels=batch["label"],
      mask=batch["mask"])


def compile_steps(mesh: Mesh, method: TrainingMethod, learning_rate_fn: Callable[[Any], Any],
                  ) -> tuple[Callable[..., Any], Callable[..., Any]]:
  """Returns (train_step, eval_step) jitted over `mesh`; the train step donates the state.

  The steps take their inputs as laid out (see the module doc); the train step constrains the new
  state to the layout of `state_lib.state_sharding`, so that it is called with the state it
  returned, in the same layout, without recompiling.
  """
  replicated = parallel.replicated_sharding(mesh)

  def laid_out_train_step(state, batch):
    new_state, step_metrics = train_step(state, batch, method=method,
                                         learning_rate_fn=learning_rate_fn)
    layout = state_lib.state_sharding(
        new_state, mesh, method.method_state_sharding(new_state.method_state, mesh))
    return jax.lax.with_sharding_constraint((new_state, step_metrics), (layout, replicated))

  jit_train_step = jax.jit(laid_out_train_step, donate_argnums=(0,))
  jit_eval_step = jax.jit(eval_step, out_shardings=replicated)
  return jit_train_step, jit_eval_step
