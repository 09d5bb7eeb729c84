"""Quantized residual networks for ImageNet: ResNet-18 and ResNet-50.

He et al. 2016a, "Deep residual learning for image recognition", Table 1. The networks only
pool globally at the end, so they also run on small images (e.g. 32x32 or 64x64).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax

from odgq_jax.models.common import (BasicBlock, ConvBN, ModuleDef, QuantizedClassifier,
                                    residual_shortcut, residual_stages)

BOTTLENECK_EXPANSION = 4


class Bottleneck(nn.Module):
  """Bottleneck residual block (He et al. 2016a, Fig. 5), stride on the 3x3 conv.

  relu(bn(conv1x1(relu(bn(conv3x3/strides(relu(bn(conv1x1(x))))))) + residual_shortcut(x)), with
  `features` channels inside and 4 * `features` channels out, as in torchvision's ResNet-50.

  Attributes:
    features: channels of the 1x1 and 3x3 convs; the block outputs 4 times as many.
    strides: stride of the 3x3 conv and the shortcut.
    conv: `QuantConv` constructor.
    norm: `nn.BatchNorm` constructor.
  """
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_features = BOTTLENECK_EXPANSION * self.features
    y = ConvBN(self.conv, self.norm, self.features, kernel_size=1, name="conv_bn1")(x)
    y = ConvBN(self.conv, self.norm, self.features, strides=self.strides, name="conv_bn2")(y)
    y = ConvBN(self.conv, self.norm, out_features, kernel_size=1, relu=False, name="conv_bn3")(y)
    return nn.relu(y + residual_shortcut(x, out_features, self.strides, self.conv, self.norm))


class ImageNetResNet(QuantizedClassifier):
  """ResNet for ImageNet (He et al. 2016a, Table 1).

  7x7/2 conv (64 channels) + BN + ReLU; 3x3/2 max pooling; four stages of `block`s with 64, 128,
  256 and 512 channels, the last three starting with stride 2, with 1x1 conv + BN projection
  shortcuts where the shape changes; global average pooling; dense.

  Attributes:
    block: `BasicBlock` or `Bottleneck`.
    blocks_per_stage: blocks of each of the four stages.
  """
  block: ModuleDef
  blocks_per_stage: tuple[int, ...]

  @nn.compact
  def __call__(self, images: jax.Array, train: bool,
               precision: int | None = None) -> jax.Array:
    norm = self.batch_norm(train, precision)
    x = ConvBN(self.first_conv(), norm, 64, kernel_size=7, strides=2,
               name="stem")(self.normalize(images))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    x = residual_stages(x, self.block, (64, 128, 256, 512), self.blocks_per_stage,
                        self.hidden_conv(precision), norm)
    return self.classifier(x)


ResNet18 = functools.partial(ImageNetResNet, block=BasicBlock, blocks_per_stage=(2, 2, 2, 2))
ResNet50 = functools.partial(ImageNetResNet, block=Bottleneck, blocks_per_stage=(3, 4, 6, 3))
