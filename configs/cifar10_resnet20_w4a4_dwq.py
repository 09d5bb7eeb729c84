"""ResNet-20 on CIFAR-10 trained with Double-Win Quant (odgq_jax/methods/dwq.py), eps 8/255.

Random precision training: each step draws the hidden layers' bit-width (weights and activations
alike) uniformly from {4, 5, 6, 7, 8}, with one BatchNorm per bit-width, and makes one FGSM-RS
update (10/255 from a random start) at that precision; first and last layers stay at 8 bits as in
the W4A4 configs. 4 bits, the W4A4 budget, is the lowest precision drawn: a deployed DWQ model
answers each query at a random precision from the set, so it costs more than a fixed W4A4 model.
It is evaluated as the exact expectation over the precisions (EOT with every draw enumerated; see
`odgq_jax.load_classifier`).

  python launch/train.py --config configs/cifar10_resnet20_w4a4_dwq.py --workdir runs/cifar10_resnet20_w4a4_dwq

Not trained here yet: docs/results.md, "Step cost per training method", gives its step's cost
relative to natural training.
"""
from configs import cifar10_resnet20_w4a4
from configs import default
from odgq_jax import methods


def get_config():
  config = cifar10_resnet20_w4a4.get_config()
  config.model.switchable_bits = (4, 5, 6, 7, 8)
  return default.robust_training(config, methods.method_config("dwq"))
