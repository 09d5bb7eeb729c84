"""ResNet-20 W4A4 on CIFAR-10, N-FGSM adversarial training (odgq_jax/methods/n_fgsm.py).

eps 8/255: uniform noise in [-16/255, 16/255], one FGSM step of 8/255 from it, no projection back
to the eps-ball (de Jorge et al. 2022); loss CE(f(x_adv), y). A step costs 2 forward+backward
passes, as FGSM-RS's does.

  python launch/train.py --config configs/cifar10_resnet20_w4a4_n_fgsm.py --workdir runs/cifar10_resnet20_w4a4_n_fgsm
"""
from configs import cifar10_resnet20_w4a4
from configs import default
from odgq_jax import methods


def get_config():
  config = cifar10_resnet20_w4a4.get_config()
  return default.robust_training(config, methods.method_config("n_fgsm"))
