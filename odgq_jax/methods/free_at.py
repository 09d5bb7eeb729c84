"""Free adversarial training (Shafahi et al. 2019, "Adversarial training for free!").

Each minibatch (x0, y) is replayed m times; every replay is one forward+backward pass on
x = clip(x0 + delta, 0, 1) that gives both the parameter gradients and g = grad_x CE(f(x), y):

  theta <- optimizer update with the parameter gradients,
  delta <- P(x - x0 + alpha sign(g)),

P keeping ||delta||_inf <= eps and x0 + delta in [0, 1], alpha = eps. The step starts from the
perturbation trained on, x - x0: a delta carried over from the previous minibatch is first clipped
to the new images' box (the authors' code steps from the unclipped delta; the two differ only where
x0 + delta left [0, 1]). The perturbation delta (the global batch's image shape) lives in
`TrainState.method_state`, laid out like the batch (each device holds its own examples' rows): it is
carried over the replays and on to the next minibatch, as in the authors' implementation, so the
adversary keeps strengthening across the whole run at no extra cost.

A minibatch makes m optimizer updates, so the training loop reads 1/m as many minibatches for the
same number of updates (`updates_per_batch`): "num_epochs" counts epochs of updates, and the run
costs about what natural training of that many epochs costs.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from odgq_jax.attacks import projection
from odgq_jax.methods import adversarial
from odgq_jax.methods import base
from odgq_jax.methods import perturbation_bank
from odgq_jax.methods.registry import register


@register("free_at")
@dataclasses.dataclass(frozen=True)
class FreeAT(base.TrainingMethod):
  """Free-AT.

  Attributes:
    eps: L-inf radius of delta.
    step_size: alpha of the sign-gradient step on delta (the paper uses alpha = eps; keep the two
      equal when changing eps).
    replays: m, the replays (and optimizer updates) of each minibatch.
  """
  eps: float = 8 / 255
  step_size: float = 8 / 255
  replays: int = 4

  def __post_init__(self):
    adversarial.check_radius_and_step("free_at", self.eps, self.step_size)
    adversarial.check_count("free_at", "replays", self.replays)

  @property
  def updates_per_batch(self) -> int:
    return self.replays

  @property
  def per_example_state(self):
    return ("delta",)

  def init_method_state(self, batch_image_shape, *, num_classes, num_train_examples):
    del num_classes, num_train_examples
    return {"delta": jnp.zeros(batch_image_shape, jnp.float32)}

  def update(self, state, batch, rng):
    del rng
    images, labels = batch["image"], batch["label"]
    # ODG-Q's local-domain update, stepping on from the perturbation trained on, is Free-AT's.

    def replay(state, _):
      adversarial_images = projection.clip_to_box(images + state.method_state["delta"])
      state, output, image_grad = base.gradient_update(
          state, adversarial_images, labels, self.label_smoothing)
      delta = perturbation_bank.update_local(adversarial_images - images, image_grad, images,
                                             self.step_size, self.eps)
      return state.replace(method_state={"delta": delta}), output

    return adversarial.replay_minibatch(replay, state, self.replays)
