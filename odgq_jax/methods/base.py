"""What a training method is, and the pieces every method shares.

A training method decides what one compiled train step does with a minibatch: which inputs the
network trains on (natural, adversarial, drawn from a perturbation bank), with which loss, and how
many optimizer updates it makes (free adversarial training and ODG-Q's local domains replay the
minibatch m times). Its options are the fields of a frozen dataclass, built from `config.method`;
any state it carries from step to step (ODG-Q's perturbation bank, Free-AT's perturbation) lives in
`TrainState.method_state`, so it is checkpointed and resumed with the run; state kept per example
(of the batch, or of the training split) is split over the device mesh along its rows
(`per_example_state`), the rest replicated.

All methods run inside the one `jax.jit`-compiled train step over the device mesh: no host round
trip, and Python control flow only on static options (attack iterations and replays are Python
loops over a static count, unrolled when traced: see `adversarial.py`).
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, ClassVar, NamedTuple

import jax
from jax.sharding import Mesh

from odgq_jax import parallel
from odgq_jax.attacks.losses import LogitsFn, cross_entropy
from odgq_jax.train_state import TrainState

Batch = dict[str, jax.Array]


class StepOutput(NamedTuple):
  """What the step reports: the training loss and the logits of the inputs trained on."""
  loss: jax.Array
  logits: jax.Array


def apply_train_mode(state: TrainState, params: Any, batch_stats: Any,
                     images: jax.Array) -> tuple[jax.Array, Any]:
  """Logits in train mode (batch statistics) and the updated BatchNorm running statistics."""
  logits, updates = state.apply_fn({"params": params, "batch_stats": batch_stats}, images,
                                   train=True, mutable=["batch_stats"])
  return logits, updates["batch_stats"]


def train_mode_logits_fn(state: TrainState) -> LogitsFn:
  """images -> logits with the current parameters in train mode, running statistics untouched.

  This is the network an attack sees while crafting training examples (as in PyTorch adversarial
  training code, where the model is in train mode during the attack).
  """
  return lambda images: apply_train_mode(state, state.params, state.batch_stats, images)[0]


def gradient_update(state: TrainState, images: jax.Array, labels: jax.Array,
                    label_smoothing: float,
                    regularizer: Callable[[Any], jax.Array] | None = None,
                    ) -> tuple[TrainState, StepOutput, jax.Array]:
  """One optimizer update on CE(f(images), y) [+ regularizer(params)].

  Returns the new state, the step output, and the gradient of the loss with respect to `images`,
  which the same backward pass gives for free (free adversarial training and ODG-Q use it).
  """

  def loss_fn(params, images):
    logits, batch_stats = apply_train_mode(state, params, state.batch_stats, images)
    loss = cross_entropy(logits, labels, label_smoothing).mean()
    if regularizer is not None:
      loss = loss + regularizer(params)
    return loss, (logits, batch_stats)

  (loss, (logits, batch_stats)), (grads, image_grad) = jax.value_and_grad(
      loss_fn, argnums=(0, 1), has_aux=True)(state.params, images)
  return state.apply_gradients(grads, batch_stats), StepOutput(loss, logits), image_grad


@dataclasses.dataclass(frozen=True)
class TrainingMethod(abc.ABC):
  """Base class. Subclasses are frozen dataclasses whose fields are the method's options.

  Attributes:
    label_smoothing: label smoothing of the task cross-entropy (set from the run's config).
    trains_switchable_precision: (class constant) whether the method trains switchable-precision
      models (`config.model.switchable_bits`); such a method has a `switchable_bits` field.
  """
  trains_switchable_precision: ClassVar[bool] = False

  label_smoothing: float = dataclasses.field(default=0.0, kw_only=True)

  @property
  def updates_per_batch(self) -> int:
    """Optimizer updates made on each minibatch (m replays; 1 for most methods)."""
    return 1

  def init_method_state(self, batch_image_shape: tuple[int, ...], *, num_classes: int,
                        num_train_examples: int) -> Any:
    """The method's initial state, given the global batch's image shape [N, H, W, C], the number
    of classes and the number of examples in the training split."""
    del batch_image_shape, num_classes, num_train_examples
    return {}

  @property
  def per_example_state(self) -> tuple[str, ...]:
    """Keys of the method state whose arrays hold one row per example, split over the devices.

    Such an array is split along its leading axis over the mesh's `data` axis, so that each of D
    devices keeps 1/D of the rows: either one row per example of the global batch ([N, ...], row n
    the n-th example of the current minibatch, e.g. Free-AT's carried perturbation), laid out like
    the batch so that each device keeps its own examples' rows; or one row per example of the
    training split (ODG-Q's memory table), where a minibatch's rows sit on any device and the
    step's gather and scatter move just those rows between devices (XLA partitions them into a
    local masked gather and an all-reduce of the batch's rows, never an all-gather of the table).
    Every other entry (a per-class table, the universal perturbations) is replicated. None here.
    """
    return ()

  def method_state_sharding(self, method_state: dict[str, Any], mesh: Mesh) -> dict[str, Any]:
    """The sharding of each leaf of `method_state` on `mesh`, in its structure: the entries named
    by `per_example_state` split along their leading axis over `data`, the rest replicated.

    Raises:
      ValueError: a key of `per_example_state` is not in `method_state`, or its rows do not split
        evenly over the mesh's devices.
    """
    missing = [key for key in self.per_example_state if key not in method_state]
    if missing:
      raise ValueError(f"{type(self).__name__}.per_example_state names {missing}, which the "
                       f"method state (keys {sorted(method_state)}) does not have")
    for key in self.per_example_state:
      for leaf in jax.tree.leaves(method_state[key]):
        rows = leaf.shape[0]
        if rows % mesh.size:
          raise ValueError(
              f"{type(self).__name__}: the method state {key!r} has one row per example ({rows} "
              f"rows), which do not split evenly over the {mesh.size} devices of the mesh; use a "
              f"training split (and batch) whose size is a multiple of {mesh.size}, e.g. "
              f"--config.train_split='train[:{rows // mesh.size * mesh.size}]'")
    batch, replicated = parallel.batch_sharding(mesh), parallel.replicated_sharding(mesh)
    return {key: jax.tree.map(lambda _: batch if key in self.per_example_state else replicated,
                              value)
            for key, value in method_state.items()}

  def state_summary(self, method_state: Any) -> dict[str, float]:
    """Scalars of the method's state that the training log shows beside the loss (none here)."""
    del method_state
    return {}

  @abc.abstractmethod
  def update(self, state: TrainState, batch: Batch,
             rng: jax.Array) -> tuple[TrainState, StepOutput]:
    """Trains on `batch` ({"image", "label"}) and returns the new state and the step output."""
