"""ResNet-20 W4A4 on CIFAR-10 trained with ODG-Q's replay design (odgq_jax/methods/odgq.py), eps 8/255.

Bank: two global domains (universal perturbations, step sizes 1/255 and 4/255), one local domain
(per-example: after each of the 4 replays of a minibatch, a sign-gradient step of 8/255 from the
perturbation that replay used), one random domain; loss = CE(adv) + 1.0 * KL(natural || adv).
Two choices made on held-out training images (docs/experiments.md, "ODG-Q on held-out images"):
loss-weighted selection (softmax of the domains' running losses at temperature 0.25, instead of
the method's uniform default) and eps growing linearly over the first 780 updates (2 epochs of
updates at batch 128 on the 50,000 training images). The 10 epochs are 10 epochs of optimizer
updates: with 4 replays per minibatch the run reads 2.5 epochs of minibatches.

  python launch/train.py --config configs/cifar10_resnet20_w4a4_odgq_replays.py --workdir runs/cifar10_resnet20_w4a4_odgq_replays

Expected: 63.89% clean test accuracy after 10 epochs of updates, 44 min on a 2-core x86_64 CPU
(JAX 0.10.2, no accelerator); quick protocol on the first 1,000 test examples: clean 63.1%,
PGD-20 25.6%, worst case over all ten attacks 22.6% (docs/results.md). With uniform
selection and no warm-up (--config.method.selection=uniform --config.method.eps_warmup_updates=0):
69.56% clean test accuracy; quick protocol: clean 68.6%, PGD-20 14.8%, worst case 12.8%.
The fresh step of configs/cifar10_resnet20_w4a4_odgq.py, ODG-Q's default, did better on held-out
images (docs/experiments.md, "A fresh step on part of the batch").
"""
from configs import cifar10_resnet20_w4a4
from configs import default
from odgq_jax import methods


def get_config():
  config = cifar10_resnet20_w4a4.get_config()
  method = methods.method_config("odgq", selection="loss_weighted", selection_temperature=0.25,
                                 eps_warmup_updates=780)
  return default.robust_training(config, method)
