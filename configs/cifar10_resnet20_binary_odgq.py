"""Binary ResNet-20 on CIFAR-10 trained with ODG-Q, eps 8/255.

The model of configs/cifar10_resnet20_binary.py, trained with the ODG-Q method and recipe of
configs/cifar10_resnet20_w4a4_odgq.py (loss-weighted selection, eps warm-up over 780 updates,
peak learning rate 0.2, no label smoothing).

  python launch/train.py --config configs/cifar10_resnet20_binary_odgq.py --workdir runs/cifar10_resnet20_binary_odgq
  python launch/eval.py --checkpoint runs/cifar10_resnet20_binary_odgq --output results/cifar10_resnet20_binary_odgq/report.json
"""
from configs import cifar10_resnet20_binary
from configs import cifar10_resnet20_w4a4_odgq
from configs import default


def get_config():
  method = cifar10_resnet20_w4a4_odgq.get_config().method
  return default.robust_training(cifar10_resnet20_binary.get_config(), method)
