"""ResNet-20, 4-bit weights and activations (W4A4), natural quantization-aware training on CIFAR-10.

Weights: signed 4-bit, per-output-channel abs-max scale ("uniform"); activations: unsigned 4-bit with
learned step size ("lsq"); first conv and last dense at 8 bits.

  python launch/train.py --config configs/cifar10_resnet20_w4a4.py --workdir runs/cifar10_resnet20_w4a4

Expected: see the results table of README.md (measured time and test accuracy on the stated machine).
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.weight_quantizer = default.quantizer("uniform", 4)
  config.model.act_quantizer = default.quantizer("lsq", 4)
  config.model.first_last_weight_quantizer = default.quantizer("uniform", 8)
  config.model.first_last_act_quantizer = default.quantizer("lsq", 8)
  return config
