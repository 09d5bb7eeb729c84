"""ResNet-20 W4A4 on CIFAR-10 trained with Defensive Quantization (odgq_jax/methods/dq.py).

Natural cross-entropy + 3e-4 * sum over conv and dense kernels of ||W^T W - I||_F^2 (the
full-precision weights); add adversarial training on FGSM-RS examples with
`--config.method.adversarial=True`.

  python launch/train.py --config configs/cifar10_resnet20_w4a4_dq.py --workdir runs/cifar10_resnet20_w4a4_dq

Not trained here yet: docs/results.md, "Step cost per training method", gives its step's cost
relative to natural training.
"""
from configs import cifar10_resnet20_w4a4
from configs import default
from odgq_jax import methods


def get_config():
  config = cifar10_resnet20_w4a4.get_config()
  return default.robust_training(config, methods.method_config("dq"))
