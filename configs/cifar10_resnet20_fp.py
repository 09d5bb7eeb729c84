"""ResNet-20, full precision, natural training on CIFAR-10: the reference for the quantized runs.

  python launch/train.py --config configs/cifar10_resnet20_fp.py --workdir runs/cifar10_resnet20_fp

Expected: see the results table of README.md (measured time and test accuracy on the stated machine).
"""
from configs import default


def get_config():
  return default.get_config()
