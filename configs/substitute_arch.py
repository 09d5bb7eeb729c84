"""Substitute for the transfer attacks: a full-precision model of another architecture (VGG-7).

  python launch/train.py --config configs/substitute_arch.py --workdir runs/substitute_arch

Committed as an export, which launch/eval.py takes as
`--substitute arch=results/substitute_arch/export`:

  python launch/export.py --checkpoint runs/substitute_arch --output results/substitute_arch/export

Used by transfer_arch. VGG-7
(`odgq_jax/models/vgg.py`) has no residual connections, so it differs from the ResNet targets in
family, not only in depth, at about the cost of a ResNet-20 step (a ResNet-56 step costs 4.2x one
on the 2-core CPU: `--config.model.name=resnet56` for a deeper ResNet instead).
Expected: 84.29% test accuracy after 10 epochs, 19 min on a 2-core x86_64 CPU (JAX 0.10.2, no
accelerator): results/substitute_arch/run.json.
"""
from configs import cifar10_resnet20_fp
from configs import default


def get_config():
  config = cifar10_resnet20_fp.get_config()
  config.seed = 2
  config.learning_rate = default.R1_LEARNING_RATE  # as trained for the README's reports
  config.model.name = "vgg7"
  return config
