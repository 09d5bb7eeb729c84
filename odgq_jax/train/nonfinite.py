"""The non-finite guard: a run stops at the first update whose loss or model variables are not
finite.

A learning rate that diverges, or a NaN or infinity that reaches the network (a corrupt image),
turns the loss and then every parameter into NaN; training on only spreads it, and a NaN state
saved would become the checkpoint the run resumes from. So the train step records, beside its
metrics, whether its loss and each leaf of the model variables (parameters, quantizer parameters
and BatchNorm running statistics: what the deployed classifier computes with) are all finite: one
all-finite reduction per leaf inside the compiled step, no transfer. `FirstNonFinite` merges these
records over the steps between two checks, keeping the earliest non-finite one, and the training
loop reads the merged record on the host (`describe`) before every log line, evaluation and
checkpoint save.

Those are points where the loop waits for the device anyway (a log line reads the loss, a save
reads the step), so the guard adds no device synchronisation; checking every step would make the
host wait for each step before dispatching the next. A NaN reached between two checks is reported
at the next one with the step where it first appeared, and a state that failed the check is never
evaluated or saved, so the latest checkpoint is the last finite state. The training method's
state is not checked: ODG-Q's running domain losses are NaN by design until a domain is first
chosen.
"""
from __future__ import annotations

import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics

NO_STEP = np.iinfo(np.int32).max  # FirstNonFinite.step when every merged step was finite

# How the message names a leaf of each collection of the model variables.
COLLECTION_NAMES = {"params": "parameter", "batch_stats": "BatchNorm statistic"}


class NonFiniteError(FloatingPointError):
  """A train step's loss or model variables became NaN or infinite (the message names the step)."""


@flax.struct.dataclass
class FirstNonFinite(metrics.Metric):
  """The earliest of the merged train steps whose loss or model variables were not all finite.

  Attributes:
    step: that step (the train state's step after it); NO_STEP if every merged step was finite.
    loss: its training loss.
    finite_variables: bool [number of leaves of the model variables], in `jax.tree.leaves` order:
      whether each leaf was all finite after that step.
  """
  step: jax.Array
  loss: jax.Array
  finite_variables: jax.Array

  @classmethod
  def from_model_output(cls, *, step: jax.Array, loss: jax.Array, variables: Any,
                        **_) -> FirstNonFinite:
    finite_variables = jnp.stack([jnp.all(jnp.isfinite(leaf))
                                  for leaf in jax.tree.leaves(variables)])
    finite = jnp.isfinite(loss) & jnp.all(finite_variables)
    return cls(step=jnp.where(finite, NO_STEP, step).astype(jnp.int32),
               loss=jnp.asarray(loss, jnp.float32), finite_variables=finite_variables)

  def merge(self, other: FirstNonFinite) -> FirstNonFinite:
    other_first = other.step < self.step
    return jax.tree.map(lambda mine, theirs: jnp.where(other_first, theirs, mine), self, other)

  def compute(self) -> jax.Array:
    return self.step


def _leaf_name(path: tuple[Any, ...]) -> str:
  """'parameter Conv_0/kernel' for the leaf at `path` of the model variables."""
  collection, *keys = (getattr(key, "key", getattr(key, "name", key)) for key in path)
  names = "/".join(str(key) for key in keys)
  return f"{COLLECTION_NAMES.get(collection, collection)} {names}"


def describe(record: FirstNonFinite, variables: Any) -> str | None:
  """What went non-finite first, e.g. "step 120: loss is nan" or "step 120: parameter
  Conv_0/kernel has non-finite values"; None if every step of `record` was finite.

  Reading `record` waits for the step that produced it. `variables` gives the names of the leaves
  (any state's model variables: the structure is the same at every step).
  """
  step = int(record.step)
  if step == NO_STEP:
    return None
  loss = float(record.loss)
  if not math.isfinite(loss):
    return f"step {step}: loss is {loss}"
  paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(variables)[0]]
  bad = [_leaf_name(path) for path, finite in zip(paths, np.asarray(record.finite_variables))
         if not finite]
  others = f" (and {len(bad) - 1} other model variables)" if len(bad) > 1 else ""
  return f"step {step}: {bad[0]} has non-finite values{others}"
