"""ResNet-20 W4A4 on CIFAR-10 trained with ODG-Q's per-example memory (odgq_jax/methods/odgq.py).

Bank: a memory domain (one perturbation per training example, carried across epochs and stepped by
8/255 from the backward pass of every update that trains on it; docs/method.md, "Memory") and a
random domain (uniform noise in the 8/255 ball), chosen per example with equal probability; each
minibatch is replayed twice, so the second replay of an example that chose the memory trains on
its stored perturbation stepped once more against the current network. loss = CE(adv) + 1.0 *
KL(natural || adv). 10 epochs of updates read 5 epochs of data.

  python launch/train.py --config configs/cifar10_resnet20_w4a4_odgq_memory.py --workdir runs/cifar10_resnet20_w4a4_odgq_memory

Chosen among the memory variants on held-out training images (docs/results.md, "Attack subsets":
heldout_odgq_memory, heldout_odgq_memory_m2, heldout_odgq_memory_random); not yet trained on the
full training split or evaluated on the test split.
"""
from configs import cifar10_resnet20_w4a4
from configs import default
from odgq_jax import methods


def get_config():
  config = cifar10_resnet20_w4a4.get_config()
  method = methods.method_config("odgq", domains=("memory", "random"), global_step_sizes=(),
                                 replays=2, selection="per_example")
  return default.robust_training(config, method)
