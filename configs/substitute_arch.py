"""Substitute for the transfer attacks: a full-precision model of another architecture (ResNet-56).

  python launch/train.py --config configs/substitute_arch.py --workdir runs/substitute_arch

Used by launch/eval.py as `--substitute arch=runs/substitute_arch` (transfer_arch). ResNet-56 costs
about 3x a ResNet-20 step; on an accelerator, `--config.model.name=preact_resnet18` gives a
substitute of a different family.
"""
from configs import cifar10_resnet20_fp


def get_config():
  config = cifar10_resnet20_fp.get_config()
  config.seed = 2
  config.model.name = "resnet56"
  return config
