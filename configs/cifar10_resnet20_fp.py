"""ResNet-20, full precision, natural training on CIFAR-10: the reference for the quantized runs.

  python launch/train.py --config configs/cifar10_resnet20_fp.py --workdir runs/cifar10_resnet20_fp

Expected: 84.34% test accuracy after 10 epochs (recipe R2, peak learning rate 0.4; seeds 0 and 1
both), 39 min on a 2-core x86_64 CPU (JAX 0.10.2, no accelerator); `git show 5bc17c5:README.md`,
"Results". Recipe R1 (--config.learning_rate=0.2) gave 83.75% +- 0.25% over seeds 0, 1 and 2.
"""
from configs import default


def get_config():
  return default.get_config()
