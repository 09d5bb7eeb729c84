"""Building blocks shared by the models.

`QuantizedClassifier` holds the fields every model has (classes, quantizers, input normalisation,
switchable precisions) and builds the input normalisation, the conv and BN layers and the classifier
head; `PrecisionBatchNorm` keeps one BatchNorm per precision; `ConvBN`, `BasicBlock`,
`residual_shortcut` and `residual_stages` are the pieces of the residual networks.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from odgq_jax import quant
from odgq_jax.models.layers import QuantConv, QuantDense

ModuleDef = Callable[..., nn.Module]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# The ImageNet statistics of torchvision's and the flax ImageNet example's preprocessing.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5

UNQUANTIZED = quant.make_quantizer("none")


class QuantizedClassifier(nn.Module):
  """Base class of the models: an image classifier built of quantized convs and dense layers.

  A subclass implements `__call__(images, train, precision=None)`, mapping float images
  [N, H, W, C] in [0, 1] to logits [N, num_classes]: it normalises the images with `normalize`,
  builds its first conv with `first_conv`, every other conv with `hidden_conv(precision)`, its BN
  layers with `batch_norm(train, precision)` and ends with `classifier`.

  Quantization, following DoReFa-Net (Zhou et al. 2016) and PACT (Choi et al. 2018), which keep
  the first and last layers at higher precision:
  * the first conv quantizes its kernel with `first_last_weight_quantizer` and does not quantize
    its input: that is the normalised image, whose pixels are already 8-bit;
  * the classifier (last layer) quantizes its kernel with `first_last_weight_quantizer` and its
    input with `first_last_act_quantizer`;
  * every other conv or dense layer, shortcut 1x1 convs included, quantizes its kernel with
    `weight_quantizer` and its input with `act_quantizer`. These inputs follow a ReLU, so they are
    non-negative and unsigned activation quantizers (PACT, LSQ unsigned) apply; the binary
    networks (`bireal`) binarize real-valued, signed inputs with the sign instead.

  Switchable precision (Double-Win Quant, Fu et al. 2021, after Jin et al. 2020's switchable
  BatchNorm): with `switchable_bits` = (b_1, .., b_P), the model is called with `precision=b`, one
  of them; the hidden layers' quantizers then run at b bits, every BN layer uses its own parameters
  and statistics for b (`PrecisionBatchNorm`), and so do the hidden layers' learnable quantizer
  parameters (`input_step_<b>bit`); kernels, the first and the last layer are shared. Initialise a
  switchable model with `init_variables`, which creates the variables of every precision.

  Compute dtype (`dtype`): the normalised images, the activations, the convolutions and the
  BatchNorm outputs are in `dtype` (float32 or bfloat16); parameters, BatchNorm statistics and
  quantizer parameters stay float32, and the quantizers run in float32 (`layers`). The head
  (global average pooling and the classifier) runs in float32, so the logits that the losses and
  the attacks compare are float32 whatever the compute dtype, for a small share of the FLOPs.

  Attributes:
    num_classes: number of logits.
    weight_quantizer: quantizer of the kernels of the hidden layers.
    act_quantizer: quantizer of the inputs of the hidden layers.
    first_last_weight_quantizer: quantizer of the kernels of the first conv and the classifier.
    first_last_act_quantizer: quantizer of the input of the classifier.
    input_mean: per-channel mean subtracted from the images (keyword-only).
    input_std: per-channel standard deviation the images are divided by (keyword-only).
    switchable_bits: the precisions of a switchable-precision model, () for a fixed one
      (keyword-only).
    dtype: the compute dtype, jnp.float32 or jnp.bfloat16 (keyword-only).
  """
  num_classes: int
  weight_quantizer: quant.Quantizer
  act_quantizer: quant.Quantizer
  first_last_weight_quantizer: quant.Quantizer
  first_last_act_quantizer: quant.Quantizer
  input_mean: tuple[float, ...] = dataclasses.field(default=CIFAR10_MEAN, kw_only=True)
  input_std: tuple[float, ...] = dataclasses.field(default=CIFAR10_STD, kw_only=True)
  switchable_bits: tuple[int, ...] = dataclasses.field(default=(), kw_only=True)
  dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)

  def normalize(self, images: jax.Array) -> jax.Array:
    """(images - input_mean) / input_std, per channel, computed in the images' dtype and returned
    in the compute dtype."""
    mean = jnp.asarray(self.input_mean, images.dtype)
    std = jnp.asarray(self.input_std, images.dtype)
    return ((images - mean) / std).astype(self.dtype)

  def first_conv(self) -> ModuleDef:
    """`QuantConv` constructor for the first conv: first-layer kernel quantizer, input as is."""
    return functools.partial(QuantConv, weight_quantizer=self.first_last_weight_quantizer,
                             input_quantizer=UNQUANTIZED, dtype=self.dtype)

  def check_precision(self, precision: int | None) -> None:
    """Raises ValueError unless `precision` is one of `switchable_bits` (None for a fixed model)."""
    if not self.switchable_bits and precision is not None:
      raise ValueError(f"precision={precision!r} given to a fixed-precision model (its config has "
                       "no model.switchable_bits)")
    if self.switchable_bits and precision not in self.switchable_bits:
      raise ValueError(f"a switchable-precision model needs precision= one of "
                       f"{list(self.switchable_bits)}, got {precision!r}")

  def hidden_conv(self, precision: int | None = None) -> ModuleDef:
    """`QuantConv` constructor for all convs but the first, at `precision` bits if switchable."""
    self.check_precision(precision)
    if precision is None:
      return functools.partial(QuantConv, weight_quantizer=self.weight_quantizer,
                               input_quantizer=self.act_quantizer, dtype=self.dtype)
    return functools.partial(QuantConv,
                             weight_quantizer=quant.with_bits(self.weight_quantizer, precision),
                             input_quantizer=quant.with_bits(self.act_quantizer, precision),
                             quantizer_param_suffix=f"_{precision}bit", dtype=self.dtype)

  def batch_norm(self, train: bool, precision: int | None = None) -> ModuleDef:
    """BatchNorm constructor: batch statistics if `train`, running averages otherwise; one
    BatchNorm per precision (`PrecisionBatchNorm`) if switchable. Output in the compute dtype;
    statistics (computed in float32), scale and bias in float32."""
    self.check_precision(precision)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON,
                             dtype=self.dtype, param_dtype=jnp.float32)
    if precision is None:
      return norm
    return functools.partial(PrecisionBatchNorm, norm=norm, precision=precision)

  def classifier(self, x: jax.Array) -> jax.Array:
    """Global average pooling of x [N, H, W, C], then the quantized dense layer `classifier`, both
    in float32: float32 logits."""
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return QuantDense(self.num_classes, weight_quantizer=self.first_last_weight_quantizer,
                      input_quantizer=self.first_last_act_quantizer, name="classifier")(pooled)


class PrecisionBatchNorm(nn.Module):
  """Switchable BatchNorm: the BatchNorm `<precision>bit` among one per precision.

  Attributes:
    norm: `nn.BatchNorm` constructor.
    precision: bit-width whose BatchNorm (scale, bias and running statistics) is used.
  """
  norm: ModuleDef
  precision: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return self.norm(name=f"{self.precision}bit")(x)


def init_variables(model: QuantizedClassifier, rng: jax.Array, images: jax.Array) -> dict:
  """`model.init(rng, images, train=True)`; for a switchable model, the union of the variables
  of every precision (shared variables are initialised identically by the same rng)."""
  if not model.switchable_bits:
    return model.init(rng, images, train=True)
  flat = {}
  for bits in model.switchable_bits:
    variables = model.init(rng, images, train=True, precision=bits)
    flat.update(flax.traverse_util.flatten_dict(flax.core.unfreeze(variables)))
  return flax.traverse_util.unflatten_dict(flat)


class ConvBN(nn.Module):
  """relu(bn(conv(x))), or bn(conv(x)) if not `relu`: the unit of post-activation ResNets.

  Attributes:
    conv: `QuantConv` constructor (with its quantizers bound).
    norm: `nn.BatchNorm` constructor.
    features: output channels.
    kernel_size: side of the square kernel.
    strides: stride along both spatial axes.
    relu: whether to end with a ReLU.
  """
  conv: ModuleDef
  norm: ModuleDef
  features: int
  kernel_size: int = 3
  strides: int = 1
  relu: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(self.features, kernel_size=(self.kernel_size, self.kernel_size),
                  strides=(self.strides, self.strides), name="conv")(x)
    x = self.norm(name="bn")(x)
    return nn.relu(x) if self.relu else x


def is_identity_shortcut(x: jax.Array, features: int, strides: int) -> bool:
  """Whether a block with `features` output channels and `strides` keeps the shape of x."""
  return x.shape[-1] == features and strides == 1


def residual_shortcut(x: jax.Array, features: int, strides: int, conv: ModuleDef, norm: ModuleDef,
                      zero_pad: bool = False) -> jax.Array:
  """The shortcut of a post-activation residual block (He et al. 2016a, Sec. 3.3).

  The identity if the shape is kept; otherwise, if `zero_pad`, option A: spatial subsampling by
  `strides` and zero channels added on both sides (parameter-free, the CIFAR ResNets), else
  option B: a 1x1 conv with `strides` + BN projection, the module `shortcut`.
  """
  if is_identity_shortcut(x, features, strides):
    return x
  if zero_pad:
    x = x[:, ::strides, ::strides, :]
    extra = features - x.shape[-1]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
  return ConvBN(conv, norm, features, kernel_size=1, strides=strides, relu=False,
                name="shortcut")(x)


class BasicBlock(nn.Module):
  """Post-activation basic residual block of two 3x3 convs (He et al. 2016a, Fig. 2).

  relu(bn(conv3x3(relu(bn(conv3x3/strides(x))))) + residual_shortcut(x)).

  Attributes:
    features: output channels.
    strides: stride of the first conv and the shortcut.
    conv: `QuantConv` constructor.
    norm: `nn.BatchNorm` constructor.
    zero_pad_shortcut: option-A (zero-padding) instead of projection shortcuts.
  """
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  zero_pad_shortcut: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = ConvBN(self.conv, self.norm, self.features, strides=self.strides, name="conv_bn1")(x)
    y = ConvBN(self.conv, self.norm, self.features, relu=False, name="conv_bn2")(y)
    shortcut = residual_shortcut(x, self.features, self.strides, self.conv, self.norm,
                                 zero_pad=self.zero_pad_shortcut)
    return nn.relu(y + shortcut)


def residual_stages(x: jax.Array, block: ModuleDef, stage_features: Sequence[int],
                    blocks_per_stage: Sequence[int], conv: ModuleDef, norm: ModuleDef) -> jax.Array:
  """Applies stages of residual blocks, the modules `stage<i>_block<j>` (from 1).

  Stage i has blocks_per_stage[i] blocks `block(features=stage_features[i], strides, conv, norm)`;
  the first block of every stage but the first has stride 2, all others stride 1.
  """
  for i, (features, num_blocks) in enumerate(zip(stage_features, blocks_per_stage, strict=True)):
    for j in range(num_blocks):
      strides = 2 if i > 0 and j == 0 else 1
      x = block(features=features, strides=strides, conv=conv, norm=norm,
                name=f"stage{i + 1}_block{j + 1}")(x)
  return x
