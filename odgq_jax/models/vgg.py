"""A narrow VGG-style network for CIFAR: plain stacked 3x3 convs, no residual connections.

The pattern of Simonyan & Zisserman 2015, "Very deep convolutional networks for large-scale image
recognition": stages of 3x3 conv + BN + ReLU units, each stage ending in a 2x2 max pool. VGG-7 here
is this project's narrow instance (6 convs of 32, 32, 64, 64, 128, 128 channels, global average
pooling, one dense layer; 0.29 M parameters, about the FLOPs of ResNet-20): the transfer attacks'
substitute of another architecture (`configs/substitute_arch.py`), a family without shortcuts.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax

from odgq_jax.models.common import ConvBN, QuantizedClassifier


class VGG(QuantizedClassifier):
  """`convs_per_stage` 3x3 conv + BN + ReLU units per stage, with `stage_features[i]` channels in
  stage i, and a 2x2/2 max pool after each stage; then global average pooling and the dense
  classifier. Quantized by the same rules as the other models (see `QuantizedClassifier`).

  Attributes:
    stage_features: output channels of each stage's convs.
    convs_per_stage: conv units per stage.
  """
  stage_features: tuple[int, ...]
  convs_per_stage: int

  @nn.compact
  def __call__(self, images: jax.Array, train: bool,
               precision: int | None = None) -> jax.Array:
    norm = self.batch_norm(train, precision)
    x = self.normalize(images)
    for stage, features in enumerate(self.stage_features):
      for index in range(self.convs_per_stage):
        conv = self.first_conv() if stage == index == 0 else self.hidden_conv(precision)
        x = ConvBN(conv, norm, features, name=f"stage{stage + 1}_conv{index + 1}")(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return self.classifier(x)


VGG7 = functools.partial(VGG, stage_features=(32, 64, 128), convs_per_stage=2)
