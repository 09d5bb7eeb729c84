"""ResNet-20, 4-bit weights and activations (W4A4), natural quantization-aware training on CIFAR-10.

Weights: signed 4-bit, per-output-channel abs-max scale ("uniform"); activations: unsigned 4-bit
with learned step size ("lsq"); first conv and last dense at 8 bits.

  python launch/train.py --config configs/cifar10_resnet20_w4a4.py --workdir runs/cifar10_resnet20_w4a4

Expected: 82.43% test accuracy after 10 epochs (recipe R2, peak learning rate 0.4), 1.91 points
below full precision; 44 min on a 2-core x86_64 CPU (JAX 0.10.2, no accelerator) with a test run
alongside for 7 of them; `git show 5bc17c5:README.md`, "Results". Recipe R1
(--config.learning_rate=0.2) gave 83.01% and, in a rerun, 82.68% (37 min alone).
"""
from configs import default


def get_config():
  return default.quantize_model(default.get_config(), weight_bits=4, act_bits=4)
