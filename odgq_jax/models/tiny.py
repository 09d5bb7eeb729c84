"""A tiny quantized CNN for tests: a train step on a CPU takes milliseconds."""
from __future__ import annotations

import flax.linen as nn
import jax

from odgq_jax.models.common import ConvBN, QuantizedClassifier


class TinyCNN(QuantizedClassifier):
  """3x3 conv (8 channels) + BN + ReLU; 3x3/2 conv (16) + BN + ReLU; global average pooling; dense.

  Quantized by the same rules as the other models (see `QuantizedClassifier`).
  """

  @nn.compact
  def __call__(self, images: jax.Array, train: bool,
               precision: int | None = None) -> jax.Array:
    norm = self.batch_norm(train, precision)
    x = ConvBN(self.first_conv(), norm, 8, name="stem")(self.normalize(images))
    x = ConvBN(self.hidden_conv(precision), norm, 16, strides=2, name="conv_bn")(x)
    return self.classifier(x)
