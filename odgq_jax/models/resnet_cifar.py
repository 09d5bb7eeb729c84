"""Quantized residual networks for CIFAR: ResNet-20/56, PreAct-ResNet-18 and WRN-34-10."""
from __future__ import annotations

import functools

import flax.linen as nn
import jax

from odgq_jax.models.common import (BasicBlock, ConvBN, ModuleDef, QuantizedClassifier,
                                    is_identity_shortcut, residual_stages)


class CifarResNet(QuantizedClassifier):
  """ResNet of depth 6n + 2 for CIFAR.

  He et al. 2016a, "Deep residual learning for image recognition", Sec. 4.2: 3x3 conv (16
  channels) + BN + ReLU; three stages of n basic blocks with 16, 32 and 64 channels and option-A
  (zero-padding) shortcuts; global average pooling; dense.

  Attributes:
    blocks_per_stage: n (3 for ResNet-20, 9 for ResNet-56).
  """
  blocks_per_stage: int

  @nn.compact
  def __call__(self, images: jax.Array, train: bool,
               precision: int | None = None) -> jax.Array:
    norm = self.batch_norm(train, precision)
    x = ConvBN(self.first_conv(), norm, 16, name="stem")(self.normalize(images))
    block = functools.partial(BasicBlock, zero_pad_shortcut=True)
    x = residual_stages(x, block, (16, 32, 64), (self.blocks_per_stage,) * 3,
                        self.hidden_conv(precision), norm)
    return self.classifier(x)


class PreActBlock(nn.Module):
  """Pre-activation basic block (He et al. 2016b, "Identity mappings in deep residual networks").

  With a = relu(bn(x)): conv3x3(relu(bn(conv3x3/strides(a)))) + shortcut, the shortcut being x
  if the shape is kept and a 1x1 conv with `strides` of a (the module `shortcut`) otherwise.

  Attributes:
    features: output channels.
    strides: stride of the first conv and the shortcut.
    conv: `QuantConv` constructor.
    norm: `nn.BatchNorm` constructor.
  """
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    activated = nn.relu(self.norm(name="bn1")(x))
    if is_identity_shortcut(x, self.features, self.strides):
      shortcut = x
    else:
      shortcut = self.conv(self.features, kernel_size=(1, 1), strides=(self.strides, self.strides),
                           name="shortcut")(activated)
    y = self.conv(self.features, strides=(self.strides, self.strides), name="conv1")(activated)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.conv(self.features, name="conv2")(y)
    return y + shortcut


class PreActResNet(QuantizedClassifier):
  """Pre-activation ResNet for CIFAR (He et al. 2016b).

  3x3 conv (`stem_features` channels); stages of `PreActBlock`s, the first with stride 1, the
  others starting with stride 2; BN + ReLU; global average pooling; dense.

  Attributes:
    stem_features: output channels of the first conv.
    stage_features: channels of each stage.
    blocks_per_stage: blocks of each stage.
  """
  stem_features: int
  stage_features: tuple[int, ...]
  blocks_per_stage: tuple[int, ...]

  @nn.compact
  def __call__(self, images: jax.Array, train: bool,
               precision: int | None = None) -> jax.Array:
    norm = self.batch_norm(train, precision)
    x = self.first_conv()(self.stem_features, name="stem_conv")(self.normalize(images))
    x = residual_stages(x, PreActBlock, self.stage_features, self.blocks_per_stage,
                        self.hidden_conv(precision), norm)
    x = nn.relu(norm(name="final_bn")(x))
    return self.classifier(x)


ResNet20 = functools.partial(CifarResNet, blocks_per_stage=3)
ResNet56 = functools.partial(CifarResNet, blocks_per_stage=9)
PreActResNet18 = functools.partial(PreActResNet, stem_features=64,
                                   stage_features=(64, 128, 256, 512),
                                   blocks_per_stage=(2, 2, 2, 2))
# Wide ResNet (Zagoruyko & Komodakis 2016, "Wide residual networks") of depth d = 34 and widening
# factor k = 10: a pre-activation ResNet with (d - 4) / 6 = 5 blocks per stage of 16k, 32k and 64k
# channels, without dropout, as in the adversarial training literature (Madry et al. 2018, TRADES).
WideResNet34x10 = functools.partial(PreActResNet, stem_features=16,
                                    stage_features=(160, 320, 640), blocks_per_stage=(5, 5, 5))
