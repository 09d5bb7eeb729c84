"""ResNet-20 W4A4 on CIFAR-10 trained with ODG-Q (odgq_jax/methods/odgq.py), eps 8/255: the memory
domain and a fresh step on part of the batch.

Bank: the memory domain alone (one perturbation per training example, carried across epochs;
docs/method.md, "Memory"). Each minibatch is read once (replays=1); 9 of every 16 examples first
take one fresh 8/255 sign-gradient step from their stored perturbation on the current network (an
FGSM step from the example's prior, as FGSM-PGI takes, Jia et al. ECCV 2022), the others train on
their stored perturbation as it is; the update's backward pass then steps every stored
perturbation once more. loss = CE(adv) (beta = 0, so no natural forward): the fresh step's 9/16
of a forward and input-gradient pass is paid for by the natural forward that beta = 0 drops.
10 epochs of updates read 10 epochs of data.

  python launch/train.py --config configs/cifar10_resnet20_w4a4_odgq.py --workdir runs/cifar10_resnet20_w4a4_odgq

Chosen on held-out training images (docs/experiments.md, "A fresh step on part of the batch"):
66.3% clean and 30.1% PGD-20 on the first 1,000 of train[45000:] after training on
train[:45000] (results/heldout_odgq_fresh/), against 66.3% and 23.6% for the replay design of
configs/cifar10_resnet20_w4a4_odgq_replays.py. A universal or a class-wise universal domain beside
the memory gave more clean accuracy and 3.3 to 3.4 points less PGD-20
(results/heldout_odgq_fresh_universal/, results/heldout_odgq_fresh_classwise/); beta 1 gave 4.6
points less clean accuracy at the same PGD-20 (results/heldout_odgq_fresh_beta1/). A second seed
gave 67.3% and 30.7% (results/heldout_odgq_fresh_seed1/); no variant of the fresh step's size,
projection or start, of training eps or of memory momentum beat it by 1.5 points of PGD-20 at
63% clean accuracy or more.

Expected: 68.72% test accuracy after 10 epochs and 33.1% under PGD-20 on the first 1,000 test
images (results/cifar10_resnet20_w4a4_odgq/), in 38 min on a 2-core x86_64 CPU without an
accelerator, part of it shared with other work (the held-out run took 56 min beside another
training run).
"""
from configs import cifar10_resnet20_w4a4
from configs import default
from odgq_jax import methods


def get_config():
  config = cifar10_resnet20_w4a4.get_config()
  method = methods.method_config("odgq", domains=("memory",), global_step_sizes=(), replays=1,
                                 beta=0.0, fresh_step_fraction=9 / 16)
  return default.robust_training(config, method)
