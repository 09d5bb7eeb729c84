"""ResNet-20 W4A4 on CIFAR-10 trained with TRADES (odgq_jax/methods/trades.py), beta 6, eps 8/255.

Adversarial inputs: 10 sign-gradient steps of 2/255 maximising KL(p(x0) || p(x_adv)) from
x0 + 0.001 N(0, I); loss CE(f(x0), y) + 6 KL(p(x0) || p(x_adv)), both branches backpropagated.

  python launch/train.py --config configs/cifar10_resnet20_w4a4_trades.py --workdir runs/cifar10_resnet20_w4a4_trades

Not trained here yet: docs/results.md, "Step cost per training method", gives its step's cost
relative to natural training.
"""
from configs import cifar10_resnet20_w4a4
from configs import default
from odgq_jax import methods


def get_config():
  config = cifar10_resnet20_w4a4.get_config()
  return default.robust_training(config, methods.method_config("trades"))
