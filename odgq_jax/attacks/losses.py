"""Per-example losses on logits, and the loss with its input gradient.

Every loss maps logits z [N, K] and labels y [N] to per-example values [N] that an untargeted
attack maximises, except `true_class_margin`, the score Square minimises. With
m = z_y - max_{j != y} z_j (the true class margin; m < 0 iff the example is misclassified):

| name  | loss                                          | reference                   |
|-------|-----------------------------------------------|-----------------------------|
| "ce"  | -log softmax(z)_y                             | cross-entropy               |
| "cw"  | -m = max_{j != y} z_j - z_y                   | Carlini & Wagner 2017       |
| "dlr" | -m / (z_pi1 - z_pi3 + 1e-12), z_pi sorted     | Croce & Hein 2020           |
|       |   decreasingly                                |                             |

The cross-entropy is also the task loss of every training method (`methods.base.gradient_update`),
there with optional label smoothing.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

LossFn = Callable[[jax.Array, jax.Array], jax.Array]
LogitsFn = Callable[[jax.Array], jax.Array]

# Makes the DLR denominator positive when the three largest logits coincide (Croce & Hein 2020).
DLR_DENOMINATOR_FLOOR = 1e-12


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Cross-entropy -sum_c t_c log softmax(z)_c, per example [N], with t = (1 - s) onehot(y) + s / K.

  With s = 0 (attacks, and training without label smoothing) this is -log softmax(z)_y.
  Label smoothing: Szegedy et al. 2016, "Rethinking the Inception architecture for computer
  vision".

  Args:
    logits: z [N, K].
    labels: int labels y [N].
    label_smoothing: s in [0, 1), a Python number (it selects the formula at trace time).
  """
  if label_smoothing == 0:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
  targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  return -jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)


def true_class_margin(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """m = z_y - max_{j != y} z_j, per example: [N]; negative iff the example is misclassified.

  The score margin that Square minimises (Andriushchenko et al. 2020, "Square Attack: a
  query-efficient black-box adversarial attack via random search").
  """
  true_logit = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  is_true_class = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  best_other_logit = jnp.max(jnp.where(is_true_class, -jnp.inf, logits), axis=1)
  return true_logit - best_other_logit


def carlini_wagner(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Carlini-Wagner margin loss max_{j != y} z_j - z_y, per example: [N].

  Carlini & Wagner 2017, "Towards evaluating the robustness of neural networks" (their f_6 with
  confidence 0, unclamped); PGD with this loss is the CW-inf attack.
  """
  return -true_class_margin(logits, labels)


def difference_of_logits_ratio(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """DLR loss -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12), per example: [N].

  z_pi1 >= z_pi2 >= ... are the logits sorted decreasingly. Croce & Hein 2020, "Reliable
  evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks". The
  ratio is invariant to shifting and rescaling the logits. Needs K >= 3 classes.

  Raises:
    ValueError: if there are fewer than 3 classes.
  """
  num_classes = logits.shape[-1]
  if num_classes < 3:
    raise ValueError(f"the DLR loss needs at least 3 classes, got {num_classes}")
  top_three = jax.lax.top_k(logits, 3)[0]
  spread = top_three[:, 0] - top_three[:, 2]
  return -true_class_margin(logits, labels) / (spread + DLR_DENOMINATOR_FLOOR)


LOSSES: dict[str, LossFn] = {
    "ce": cross_entropy,
    "cw": carlini_wagner,
    "dlr": difference_of_logits_ratio,
}


def check_loss_name(name: str, attack: str) -> None:
  """Raises ValueError unless `name` is a key of `LOSSES`."""
  if name not in LOSSES:
    raise ValueError(f"{attack}: loss must be one of {sorted(LOSSES)}, got {name!r}")


def is_misclassified(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """argmax_j z_j != y, per example: [N] bool."""
  return jnp.argmax(logits, axis=1) != labels


def loss_and_input_gradient(
    logits_fn: LogitsFn, loss_fn: LossFn, images: jax.Array,
    labels: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One forward and backward pass: per-example losses [N], logits [N, K] and d loss_n / d x_n.

  The gradient is that of sum_n loss_n, which is the per-example gradient as long as the model
  treats the examples independently (eval mode).
  """

  def summed_loss(x):
    logits = logits_fn(x)
    losses = loss_fn(logits, labels)
    return jnp.sum(losses), (losses, logits)

  (_, (losses, logits)), gradient = jax.value_and_grad(summed_loss, has_aux=True)(images)
  return losses, logits, gradient
