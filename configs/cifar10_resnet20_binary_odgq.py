"""Binary ResNet-20 on CIFAR-10 trained with ODG-Q, eps 8/255.

The model of configs/cifar10_resnet20_binary.py, trained with the ODG-Q method of
configs/cifar10_resnet20_w4a4_odgq.py (the memory domain with a fresh step on 9 of every 16
examples, beta 0) and the robust recipe (peak learning rate 0.2, no label smoothing). The text
after ":" names another W4A4 ODG-Q config whose method to take instead, e.g.
`--config configs/cifar10_resnet20_binary_odgq.py:odgq_replays` for the replay design of
configs/cifar10_resnet20_w4a4_odgq_replays.py.

  python launch/train.py --config configs/cifar10_resnet20_binary_odgq.py --workdir runs/cifar10_resnet20_binary_odgq
  python launch/eval.py --checkpoint runs/cifar10_resnet20_binary_odgq --protocol quick --substitute fp=results/substitute_fp/export --substitute arch=results/substitute_arch/export --substitute low_bit=results/substitute_low_bit/export --output results/cifar10_resnet20_binary_odgq/report.json

The default: 50.09% clean test accuracy after 10 epochs of updates; on the first 1,000 test
examples 49.3% clean, PGD-20 15.4%, PGD++ 14.1% and a worst case of 9.2% over the ten attacks
(results/cifar10_resnet20_binary_odgq/). With the replay design: 50.06% clean test accuracy after 10 epochs of updates; PGD-20 13.9% and
PGD++ 13.6% on the first 1,000 test examples (results/cifar10_resnet20_binary_odgq_replays/).
"""
import importlib

from configs import cifar10_resnet20_binary
from configs import default


def get_config(odgq_config="odgq"):
  try:
    w4a4 = importlib.import_module(f"configs.cifar10_resnet20_w4a4_{odgq_config}").get_config()
  except ModuleNotFoundError as e:
    raise ValueError(f"configs/cifar10_resnet20_binary_odgq.py:{odgq_config} needs "
                     f"configs/cifar10_resnet20_w4a4_{odgq_config}.py, which does not exist") from e
  if w4a4.method.name != "odgq":
    raise ValueError(f"configs/cifar10_resnet20_w4a4_{odgq_config}.py does not train with ODG-Q")
  return default.robust_training(cifar10_resnet20_binary.get_config(), w4a4.method)
