"""`load_classifier`: a trained checkpoint, or its export, as a deployed classifier.

  clf = odgq_jax.load_classifier("runs/cifar10_resnet20_w4a4")  # or an export directory
  logits = clf.logits(images)  # float32 [N, 32, 32, 3] in [0, 1] -> [N, 10]

The classifier runs the model exactly as deployed: eval mode (BatchNorm running statistics) and the
quantized forward pass; gradients through it pass the quantizers' straight-through estimators.
From a training checkpoint it reads only the model's variables (params and BatchNorm statistics),
so inference needs no training code; from an export (`launch/export.py`, `odgq_jax/export`) it runs
the serialized forward pass itself.

A switchable-precision model (Double-Win Quant, `config.model.switchable_bits` = {b_1, .., b_P})
is deployed with random precision inference, each query answered at a uniformly drawn b. The
classifier returns the expectation of that prediction, exactly:

  logits(x) = log((1/P) sum_b softmax(f_b(x))),

the EOT model of docs/evaluation.md (`attacks.eot`) with every draw enumerated instead of
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
from odgq_jax.attacks.losses import LogitsFn
from odgq_jax.export import artefact
from odgq_jax import models
from odgq_jax import parallel


def model_logits(model: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
  """The deployed model's logits: eval mode, and the expectation over precisions (module doc) for
  a switchable-precision model."""
  if not model.switchable_bits:
    return model.apply(variables, images, train=False)
  return eot.log_mean_softmax(jnp.stack([
      model.apply(variables, images, train=False, precision=bits)
      for bits in model.switchable_bits]))


@dataclasses.dataclass(frozen=True)
class Classifier:
  """A trained model in eval mode.

  Attributes:
    config: the run's config.
    num_classes: number of logits.
    image_shape: (H, W, C) of the images it takes.
    step: the training step of the checkpoint.
    model: the Flax module.
    variables: {"params": ..., "batch_stats": ...}; None for an export.
    exported: the serialized forward pass of an export (`jax.export`), which then computes the
      logits; None for a training checkpoint.
  """
  config: ml_collections.ConfigDict
  num_classes: int
  image_shape: tuple[int, int, int]
  step: int
  model: nn.Module
  variables: Any
  exported: jax.export.Exported | None = None

  @property
  def is_binary(self) -> bool:
    """Whether the model is a binary network, as its config declares it (`models.is_binary`): the
    evaluation then adds PGD++ to the white-box attacks."""
    return models.is_binary(self.config.model)

  @property
  def logits_fn(self) -> LogitsFn:
    """images -> logits, unchecked and traceable (for attacks under `jax.jit` and `jax.grad`)."""
    return functools.partial(self._apply, self.variables)

  def _apply(self, variables: Any, images: jax.Array) -> jax.Array:
    """The deployed model's logits (the expectation over precisions if switchable)."""
    if self.exported is not None:
      return self.exported.call(jnp.asarray(images, jnp.float32))
    return model_logits(self.model, variables, images)

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
  """Loads the classifier trained in `checkpoint_dir` (a `--workdir` of launch/train.py) or
  exported to it (`launch/export.py`).

  Args:
    checkpoint_dir: the run's directory (holds config.json, dataset_info.json, checkpoints/), or
      an export (holds metadata.json, forward.jax_exported, weights/).
    step: "latest", "best" (by the eval accuracy recorded during training) or a step number; an
      export holds one step, which "latest" or its number selects.

  Raises:
    ValueError: the directory does not exist, holds no config or no (complete) checkpoint, the
      checkpoint cannot be read, `step` is not one of the above; an export that is incomplete
      or damaged (`export.artefact.ExportError`).
  """
  if artefact.is_export(checkpoint_dir):
    return _load_export(checkpoint_dir, step)
  config = checkpointing.load_config(checkpoint_dir)
  num_classes, image_shape = checkpointing.load_dataset_info(checkpoint_dir)
  model = models.create_model_for_run(config, num_classes)
  checkpointer = checkpointing.Checkpointer(checkpoint_dir, read_only=True)
  if step == "latest":
    step = checkpointer.latest_step()
  elif step == "best":
    step = checkpointer.best_step()
  elif not isinstance(step, int):
    raise ValueError(f"step must be 'latest', 'best' or an int, got {step!r}")
  if step is None:
    raise ValueError(f"no complete checkpoint in {checkpointer.directory}")
  variables = checkpointer.restore_entries(_abstract_variables(model, image_shape), step=step)
  checkpointer.close()
  return Classifier(config=config, num_classes=num_classes, image_shape=image_shape,
                    step=step, model=model, variables=variables)


def _abstract_variables(model: nn.Module, image_shape: tuple[int, ...]) -> dict[str, Any]:
  """The structure, shapes and dtypes of the model's variables, the entries "params" and
  "batch_stats" of a train state, replicated over the local devices; computing nothing."""
  abstract = jax.eval_shape(functools.partial(models.init_variables, model, jax.random.PRNGKey(0)),
                            jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
  sharding = parallel.replicated_sharding(parallel.create_mesh(jax.local_devices()))
  return {name: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                             abstract[name])
          for name in ("params", "batch_stats") if abstract.get(name)}


def _load_export(directory: str, step: int | str) -> Classifier:
  """The classifier of an export: its serialized forward pass, and its model and config from
  metadata.json (`artefact.read_export` checks every file first)."""
  metadata, exported = artefact.read_export(directory)
  exported_step = metadata["checkpoint"]["step"]
  if step not in ("latest", exported_step):
    raise ValueError(f"{directory} is an export of step {exported_step}; step must be 'latest' or "
                     f"{exported_step}, got {step!r}")
  config = ml_collections.ConfigDict(metadata["config"])
  model = models.create_model_for_run(config, metadata["num_classes"])
  return Classifier(config=config, num_classes=metadata["num_classes"],
                    image_shape=tuple(metadata["image_shape"]), step=exported_step, model=model,
                    variables=None, exported=exported)


