"""Substitute for the transfer attacks: a 2-bit (W2A2) ResNet-20; low-bit substitutes transfer
better to quantized targets.

  python launch/train.py --config configs/substitute_low_bit.py --workdir runs/substitute_low_bit

Used by launch/eval.py as `--substitute low_bit=runs/substitute_low_bit` (transfer_low_bit).
"""
from configs import cifar10_resnet20_w4a4
from configs import default


def get_config():
  config = cifar10_resnet20_w4a4.get_config()
  config.seed = 3
  config.model.weight_quantizer = default.quantizer("uniform", 2)
  config.model.act_quantizer = default.quantizer("lsq", 2)
  return config
