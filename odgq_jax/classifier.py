"""`load_classifier`: a trained checkpoint as a deployed classifier, for evaluation and export.

  clf = odgq_jax.load_classifier("runs/cifar10_resnet20_w4a4")
  logits = clf.logits(images)  # float32 [N, 32, 32, 3] in [0, 1] -> [N, 10]

The classifier runs the model exactly as deployed: eval mode (BatchNorm running statistics) and the
quantized forward pass; gradients through it pass the quantizers' straight-through estimators.

A switchable-precision model (Double-Win Quant, `config.model.switchable_bits` = {b_1, .., b_P})
is deployed with random precision inference, each query answered at a uniformly drawn b. The
classifier returns the expectation of that prediction, exactly:

  logits(x) = log((1/P) sum_b softmax(f_b(x))),

the EOT model of shared/EVALUATION.md (`attacks.eot`) with every draw enumerated instead of
sampled; attacks and scoring both see it.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from odgq_jax import checkpointing
from odgq_jax.attacks import eot
from odgq_jax import methods
from odgq_jax import models
from odgq_jax import parallel
from odgq_jax.train import optimizer
from odgq_jax import train_state as state_lib

LogitsFn = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Classifier:
  """A trained model in eval mode.

  Attributes:
    config: the run's config.
    num_classes: number of logits.
    image_shape: (H, W, C) of the images it takes.
    step: the training step of the checkpoint.
    model: the Flax module.
    variables: {"params": ..., "batch_stats": ...}.
  """
  config: ml_collections.ConfigDict
  num_classes: int
  image_shape: tuple[int, int, int]
  step: int
  model: nn.Module
  variables: Any

  @property
  def logits_fn(self) -> LogitsFn:
    """images -> logits, unchecked and traceable (for attacks under `jax.jit` and `jax.grad`)."""
    return functools.partial(self._apply, self.variables)

  def _apply(self, variables: Any, images: jax.Array) -> jax.Array:
    """The deployed model's logits (the expectation over precisions if switchable)."""
    if not self.model.switchable_bits:
      return self.model.apply(variables, images, train=False)
    return eot.log_mean_softmax(jnp.stack([
        self.model.apply(variables, images, train=False, precision=bits)
        for bits in self.model.switchable_bits]))

  def check_images(self, images: Any) -> None:
    """Raises ValueError unless `images` is a float array [N, *image_shape] with values in
    [0, 1]."""
    shape, dtype = np.shape(images), getattr(images, "dtype", np.asarray(images).dtype)
    if len(shape) != 4 or tuple(shape[1:]) != self.image_shape:
      raise ValueError(f"expected images of shape [N, {', '.join(map(str, self.image_shape))}], "
                       f"got {list(shape)}")
    if not np.issubdtype(dtype, np.floating):
      raise ValueError(f"expected float images in [0, 1], got dtype {dtype} (divide uint8 "
                       "images by 255)")
    low, high = float(np.min(images)), float(np.max(images))
    if low < 0.0 or high > 1.0:
      raise ValueError(f"expected images in [0, 1], got values in [{low:.4g}, {high:.4g}]")

  def logits(self, images: Any) -> jax.Array:
    """Logits [N, num_classes] of float images [N, H, W, C] in [0, 1] (checked)."""
    self.check_images(images)
    return self._jit_logits(self.variables, images)

  @functools.cached_property
  def _jit_logits(self) -> Callable[[Any, jax.Array], jax.Array]:
    return jax.jit(self._apply)


def load_classifier(checkpoint_dir: str, step: int | str = "latest") -> Classifier:
  """Loads the classifier trained in `checkpoint_dir` (a `--workdir` of launch/train.py).

  Args:
    checkpoint_dir: the run's directory (holds config.json, dataset_info.json, checkpoints/).
    step: "latest", "best" (by the eval accuracy recorded during training) or a step number.

  Raises:
    ValueError: the directory does not exist, holds no config or no (complete) checkpoint, the
      checkpoint cannot be read, or `step` is not one of the above.
  """
  config = checkpointing.load_config(checkpoint_dir)
  num_classes, image_shape = checkpointing.load_dataset_info(checkpoint_dir)
  model = models.create_model_from_config(config.model, num_classes)
  # The optimizer state's structure does not depend on the learning-rate values.
  tx = optimizer.create_optimizer(config, learning_rate_fn=lambda count: 0.0)
  mesh = parallel.create_mesh(jax.local_devices())
  # A training method's state (ODG-Q's bank, Free-AT's perturbation) is part of the checkpoint.
  method_state = methods.create_method_for_run(config).init_method_state(
      (config.batch_size, *image_shape))
  abstract = state_lib.abstract_train_state(model, tx, image_shape, mesh, method_state)
  checkpointer = checkpointing.Checkpointer(checkpoint_dir, read_only=True)
  if step == "latest":
    step = checkpointer.latest_step()
  elif step == "best":
    step = checkpointer.best_step()
  elif not isinstance(step, int):
    raise ValueError(f"step must be 'latest', 'best' or an int, got {step!r}")
  if step is None:
    raise ValueError(f"no complete checkpoint in {checkpointer.directory}")
  state = checkpointer.restore(abstract, step=step)
  checkpointer.close()
  return Classifier(config=config, num_classes=num_classes, image_shape=image_shape,
                    step=int(state.step), model=model, variables=state.variables)


