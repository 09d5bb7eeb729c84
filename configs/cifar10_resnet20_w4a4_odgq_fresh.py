"""ResNet-20 W4A4 on CIFAR-10 trained with ODG-Q's memory domain and a fresh step on part of the
batch (odgq_jax/methods/odgq.py).

Bank: the memory domain alone (one perturbation per training example, carried across epochs;
docs/method.md, "Memory"). Each minibatch is read once (replays=1); 9 of every 16 examples first
take one fresh 8/255 sign-gradient step from their stored perturbation on the current network (an
FGSM step from the example's prior, as FGSM-PGI takes, Jia et al. ECCV 2022), the others train on
their stored perturbation as it is; the update's backward pass then steps every stored
perturbation once more. loss = CE(adv) (beta = 0, so no natural forward): the fresh step's 9/16
of a forward and input-gradient pass is paid for by the natural forward that beta = 0 drops.
10 epochs of updates read 10 epochs of data.

  python launch/train.py --config configs/cifar10_resnet20_w4a4_odgq_fresh.py --workdir runs/cifar10_resnet20_w4a4_odgq_fresh

A candidate tried on held-out training images (docs/results.md, "Attack subsets":
heldout_odgq_fresh); not the default.
"""
from configs import cifar10_resnet20_w4a4
from configs import default
from odgq_jax import methods


def get_config():
  config = cifar10_resnet20_w4a4.get_config()
  method = methods.method_config("odgq", domains=("memory",), global_step_sizes=(), replays=1,
                                 beta=0.0, fresh_step_fraction=9 / 16)
  return default.robust_training(config, method)
