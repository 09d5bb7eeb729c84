"""Substitute for the transfer attacks: a 2-bit (W2A2) ResNet-20; low-bit substitutes transfer
better to quantized targets.

  python launch/train.py --config configs/substitute_low_bit.py --workdir runs/substitute_low_bit

Committed as an export, which launch/eval.py takes as
`--substitute low_bit=results/substitute_low_bit/export`:

  python launch/export.py --checkpoint runs/substitute_low_bit --output results/substitute_low_bit/export

Used by transfer_low_bit.
Expected: 77.43% test accuracy after 10 epochs, 29 min on a 2-core x86_64 CPU (JAX 0.10.2,
no accelerator): results/substitute_low_bit/run.json.
"""
from configs import default


def get_config():
  config = default.quantize_model(default.get_config(), weight_bits=2, act_bits=2)
  config.seed = 3
  config.learning_rate = default.R1_LEARNING_RATE  # as trained for the README's reports
  return config
