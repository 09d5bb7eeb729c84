"""Substitute for the transfer attacks: an independently trained full-precision ResNet-20
(seed 1, recipe R1).

  python launch/train.py --config configs/substitute_fp.py --workdir runs/substitute_fp

Committed as an export, which launch/eval.py takes as
`--substitute fp=results/substitute_fp/export`:

  python launch/export.py --checkpoint runs/substitute_fp --output results/substitute_fp/export

Used by transfer_fp and transfer_di_mi.
Expected: 84.02% test accuracy after 10 epochs, 30 min on a 2-core x86_64 CPU (JAX 0.10.2,
no accelerator): results/substitute_fp/run.json.
"""
from configs import cifar10_resnet20_fp
from configs import default


def get_config():
  config = cifar10_resnet20_fp.get_config()
  config.seed = 1  # independent of the evaluated models (seed 0)
  config.learning_rate = default.R1_LEARNING_RATE  # as trained for the README's reports
  return config
