"""ResNet-20 W4A4 on CIFAR-10, FGSM-RS "fast" adversarial training (odgq_jax/methods/fgsm_rs.py).

eps 8/255: one FGSM step of 10/255 from a uniform random start in the eps-ball, projected; loss
CE(f(x_adv), y). A step costs 2 forward+backward passes.

  python launch/train.py --config configs/cifar10_resnet20_w4a4_fgsm_rs.py --workdir runs/cifar10_resnet20_w4a4_fgsm_rs

Expected: 66.26% clean test accuracy after 10 epochs, about 70 min on a 2-core x86_64 CPU (JAX
0.10.2, no accelerator); quick protocol on the first 1,000 test examples: clean 65.9%, PGD-20
33.3%, worst case over all ten attacks 28.6% (docs/results.md).
"""
from configs import cifar10_resnet20_w4a4
from configs import default
from odgq_jax import methods


def get_config():
  config = cifar10_resnet20_w4a4.get_config()
  return default.robust_training(config, methods.method_config("fgsm_rs"))
