"""ResNet-20 W4A4 on CIFAR-10 trained with PGD-AT (odgq_jax/methods/pgd_at.py), eps 8/255.

PGD-10 (step 2/255, uniform random start) against the train-mode network crafts the training
inputs; loss CE(f(x_adv), y). A step costs 11 forward+backward passes.

  python launch/train.py --config configs/cifar10_resnet20_w4a4_pgd_at.py --workdir runs/cifar10_resnet20_w4a4_pgd_at

Not trained here yet: docs/results.md, "Step cost per training method", gives its step's cost
relative to natural training.
"""
from configs import cifar10_resnet20_w4a4
from configs import default
from odgq_jax import methods


def get_config():
  config = cifar10_resnet20_w4a4.get_config()
  return default.robust_training(config, methods.method_config("pgd_at", attack_steps=10))
