"""Binary residual networks with a real-valued shortcut around every binary convolution.

Bi-Real Net (Liu et al. 2018, "Bi-Real Net: Enhancing the performance of 1-bit CNNs with improved
representational capability and advanced training algorithm"): each binary convolution is its own
residual unit,

  y = bn(conv(sign(x), a * sign(W))) + shortcut(x),

so the real-valued activations x, not only their signs, reach the next unit. The sign of the
activations and of the weights, and the weights' per-output-channel scale a = mean|W| (XNOR-Net),
are the hidden-layer quantizers of the config (`binary` with `ste="approx_sign"` for the
activations, Bi-Real Net's ApproxSign; `binary` with `scale=True` for the weights; see
`configs/default.py`, `binarize_model`). Two options of ReActNet (Liu et al. 2020, "ReActNet:
Towards precise binary neural network with generalized activation functions"):
* RSign, a learnable per-channel threshold of the activations' sign, is the activation
  quantizer's `learnable_threshold` option;
* RPReLU, y = PReLU(u - gamma) + zeta with per-channel gamma, zeta and slope, applied to the
  unit's output u (after the shortcut is added), is the model's `rprelu` option.

The shortcut is the identity where the shape is kept, and Bi-Real Net's real-valued downsampling
otherwise: 2x2 average pooling with the unit's stride, then a full-precision 1x1 conv and BN. The
first conv (no ReLU after its BN: the units need signed inputs) and the classifier are quantized
by the first/last-layer quantizers, as in the other models (`QuantizedClassifier`).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from odgq_jax.models.common import (UNQUANTIZED, ModuleDef, QuantizedClassifier,
                                    is_identity_shortcut, residual_stages)
from odgq_jax.models.layers import QuantConv

# PReLU's initial negative slope (He et al. 2015, "Delving deep into rectifiers"; ReActNet).
RPRELU_INITIAL_SLOPE = 0.25


class RPReLU(nn.Module):
  """ReActNet's RPReLU: per channel c (the last axis),

    y = u - gamma_c + zeta_c            if u > gamma_c,
    y = beta_c (u - gamma_c) + zeta_c   otherwise,

  with float32 parameters `input_shift` (gamma, initially 0), `negative_slope` (beta, initially
  0.25) and `output_shift` (zeta, initially 0), computed in u's dtype.
  """

  @nn.compact
  def __call__(self, u: jax.Array) -> jax.Array:
    shape = (u.shape[-1],)
    gamma = self.param("input_shift", nn.initializers.zeros, shape, jnp.float32)
    beta = self.param("negative_slope", nn.initializers.constant(RPRELU_INITIAL_SLOPE), shape,
                      jnp.float32)
    zeta = self.param("output_shift", nn.initializers.zeros, shape, jnp.float32)
    shifted = u - gamma.astype(u.dtype)
    return jnp.where(shifted > 0, shifted, beta.astype(u.dtype) * shifted) + zeta.astype(u.dtype)


class BinaryConvUnit(nn.Module):
  """One binary 3x3 convolution with its real-valued shortcut:

    u = bn(binary_conv/strides(x)) + shortcut(x),   y = rprelu(u) if `rprelu` else u,

  where `binary_conv` is `conv` (the hidden-layer `QuantConv`: it binarizes its input and its
  kernel) and the shortcut is x, or, where the shape changes, avg_pool_2x2/strides(x) (padded
  like the conv on odd sizes) -> full-precision 1x1 conv `shortcut_conv` -> bn `shortcut_bn`.

  Attributes:
    features: output channels.
    strides: stride of the binary conv and of the shortcut's pooling.
    conv: `QuantConv` constructor of the binary conv.
    norm: `nn.BatchNorm` constructor.
    shortcut_conv: `QuantConv` constructor of the shortcut's full-precision 1x1 conv.
    rprelu: end with RPReLU (ReActNet).
  """
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  shortcut_conv: ModuleDef
  rprelu: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv(self.features, strides=(self.strides, self.strides), name="binary_conv")(x)
    u = self.norm(name="bn")(y) + self.shortcut(x)
    return RPReLU(name="rprelu")(u) if self.rprelu else u

  def shortcut(self, x: jax.Array) -> jax.Array:
    if is_identity_shortcut(x, self.features, self.strides):
      return x
    if self.strides > 1:
      x = nn.avg_pool(x, (2, 2), strides=(self.strides, self.strides), padding="SAME")
    x = self.shortcut_conv(self.features, kernel_size=(1, 1), name="shortcut_conv")(x)
    return self.norm(name="shortcut_bn")(x)


class BiRealBlock(nn.Module):
  """Two `BinaryConvUnit`s, the first with `strides`: the place of a ResNet basic block.

  Attributes:
    features: output channels.
    strides: stride of the first unit.
    conv: `QuantConv` constructor of the binary convs.
    norm: `nn.BatchNorm` constructor.
    shortcut_conv: `QuantConv` constructor of the downsampling shortcuts' 1x1 convs.
    rprelu: end every unit with RPReLU.
  """
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  shortcut_conv: ModuleDef
  rprelu: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    unit = functools.partial(BinaryConvUnit, features=self.features, conv=self.conv,
                             norm=self.norm, shortcut_conv=self.shortcut_conv,
                             rprelu=self.rprelu)
    x = unit(strides=self.strides, name="unit1")(x)
    return unit(strides=1, name="unit2")(x)


class BiRealResNet(QuantizedClassifier):
  """A ResNet whose basic blocks are `BiRealBlock`s (module doc).

  Stem: for ImageNet (`imagenet_stem`), 7x7/2 conv (64 channels) + BN and 3x3/2 max pooling, as
  in Bi-Real Net-18; for CIFAR, 3x3 conv (`stage_features[0]` channels) + BN. Then stages of
  `BiRealBlock`s (the first block of every stage but the first with stride 2), global average
  pooling and the classifier.

  Attributes:
    stage_features: channels of each stage.
    blocks_per_stage: `BiRealBlock`s of each stage (two binary convs each).
    imagenet_stem: the ImageNet stem instead of the CIFAR one.
    rprelu: end every binary unit with RPReLU (ReActNet); a model option
      (`config.model.rprelu`).
  """
  stage_features: tuple[int, ...]
  blocks_per_stage: tuple[int, ...]
  imagenet_stem: bool
  rprelu: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, train: bool,
               precision: int | None = None) -> jax.Array:
    norm = self.batch_norm(train, precision)
    x = self.normalize(images)
    if self.imagenet_stem:
      x = self.first_conv()(64, kernel_size=(7, 7), strides=(2, 2), name="stem_conv")(x)
      x = norm(name="stem_bn")(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = self.first_conv()(self.stage_features[0], name="stem_conv")(x)
      x = norm(name="stem_bn")(x)
    shortcut_conv = functools.partial(QuantConv, weight_quantizer=UNQUANTIZED,
                                      input_quantizer=UNQUANTIZED, dtype=self.dtype)
    block = functools.partial(BiRealBlock, shortcut_conv=shortcut_conv, rprelu=self.rprelu)
    x = residual_stages(x, block, self.stage_features, self.blocks_per_stage,
                        self.hidden_conv(precision), norm)
    return self.classifier(x)


# Binary ResNet-20 for CIFAR: ResNet-20's 18 hidden 3x3 convs (three stages of 16, 32, 64
# channels), each a binary unit with its real-valued shortcut.
BinaryResNet20 = functools.partial(BiRealResNet, stage_features=(16, 32, 64),
                                   blocks_per_stage=(3, 3, 3), imagenet_stem=False)
# Bi-Real Net-18 (Liu et al. 2018): ResNet-18's 16 hidden 3x3 convs, each a binary unit.
BiRealNet18 = functools.partial(BiRealResNet, stage_features=(64, 128, 256, 512),
                                blocks_per_stage=(2, 2, 2, 2), imagenet_stem=True)
