"""ResNet-20 W4A4 on CIFAR-10 trained with ODG-Q (odgq_jax/methods/odgq.py), eps 8/255.

Bank: two global domains (universal perturbations, step sizes 1/255 and 4/255), one local domain
(per-example: after each of the 4 replays of a minibatch, a sign-gradient step of 8/255 from the
perturbation that replay used), one random domain; uniform selection;
loss = CE(adv) + 1.0 * KL(natural || adv). The 10 epochs are 10 epochs of optimizer updates: with 4
replays per minibatch the run reads 2.5 epochs of minibatches.

  python launch/train.py --config configs/cifar10_resnet20_w4a4_odgq.py --workdir runs/cifar10_resnet20_w4a4_odgq

Expected: 69.56% clean test accuracy after 10 epochs of updates, 45 min on a 2-core x86_64 CPU
(JAX 0.10.2, no accelerator); quick protocol on the first 1,000 test examples: clean 68.6%, PGD-20
14.8%, worst case over all ten attacks 12.8% (README.md, "Results").
"""
from configs import cifar10_resnet20_w4a4
from configs import default
from odgq_jax import methods


def get_config():
  config = cifar10_resnet20_w4a4.get_config()
  return default.robust_training(config, methods.method_config("odgq"))
