"""What a training method is, and the pieces every method shares.

A training method decides what one compiled train step does with a minibatch: which inputs the
network trains on (natural, adversarial, drawn from a perturbation bank), with which loss, and how
many optimizer updates it makes (free adversarial training and ODG-Q's local domains replay the
minibatch m times). Its options are the fields of a frozen dataclass, built from `config.method`;
any state it carries from step to step (ODG-Q's perturbation bank, Free-AT's perturbation) lives in
`TrainState.method_state`, so it is checkpointed and resumed with the run.

All methods run inside the one `jax.jit`-compiled train step over the device mesh: no host round
trip, and Python control flow only on static options (attack iterations and replays are Python
loops over a static count, unrolled when traced: see `adversarial.py`).
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from odgq_jax.train_state import TrainState

Batch = dict[str, jax.Array]


class StepOutput(NamedTuple):
  """What the step reports: the training loss and the logits of the inputs trained on."""
  loss: jax.Array
  logits: jax.Array


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example cross-entropy -sum_c y_c log softmax(z)_c, with y = (1 - s) onehot + s / C: [N]."""
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
  targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  return -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)


def apply_train_mode(state: TrainState, params: Any, batch_stats: Any,
                     images: jax.Array) -> tuple[jax.Array, Any]:
  """Logits in train mode (batch statistics) and the updated BatchNorm running statistics."""
  logits, updates = state.apply_fn({"params": params, "batch_stats": batch_stats}, images,
                                   train=True, mutable=["batch_stats"])
  return logits, updates["batch_stats"]


def train_mode_logits_fn(state: TrainState) -> Callable[[jax.Array], jax.Array]:
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

  def init_method_state(self, batch_image_shape: tuple[int, ...]) -> Any:
    """The method's initial state, given the global batch's image shape [N, H, W, C]."""
    del batch_image_shape
    return {}

  def state_summary(self, method_state: Any) -> dict[str, float]:
    """Scalars of the method's state that the training log shows beside the loss (none here)."""
    del method_state
    return {}

  @abc.abstractmethod
  def update(self, state: TrainState, batch: Batch,
             rng: jax.Array) -> tuple[TrainState, StepOutput]:
    """Trains on `batch` ({"image", "label"}) and returns the new state and the step output."""
