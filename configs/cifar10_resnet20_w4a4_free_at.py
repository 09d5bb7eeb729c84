"""ResNet-20 W4A4 on CIFAR-10 trained with Free-AT (odgq_jax/methods/free_at.py), eps 8/255, m = 4.

Each minibatch is replayed 4 times; each replay is one forward+backward pass giving the optimizer
update and a sign-gradient step of 8/255 on the perturbation, which is carried over to the next
replay and the next minibatch. The 10 epochs are 10 epochs of optimizer updates (10 x 390 = 3900
at batch 128): with 4 updates per minibatch the loop reads 1/4 as many minibatches, 975 = 2.5
epochs of data, and the run costs about what 10 epochs of natural training cost.

  python launch/train.py --config configs/cifar10_resnet20_w4a4_free_at.py --workdir runs/cifar10_resnet20_w4a4_free_at

Not trained here on the full training split yet. On held-out images (train[:44800], 3,500
updates, then PGD-20 on the first 1,000 images of train[44800:]) it reached 55.6% clean and 26.1%
PGD-20 accuracy in about 40 min on a 2-core x86_64 CPU (docs/experiments.md, "ODG-Q on held-out
images"); docs/results.md, "Step cost per training method", gives its step's cost relative to
natural training.
"""
from configs import cifar10_resnet20_w4a4
from configs import default
from odgq_jax import methods


def get_config():
  config = cifar10_resnet20_w4a4.get_config()
  return default.robust_training(config, methods.method_config("free_at"))
