"""Smoke test: a tiny W4A4 model for a few steps on a slice of CIFAR-10; checks the whole pipeline.

  python launch/train.py --config configs/smoke.py --workdir /tmp/odgq_smoke

Expected: under a minute on a 2-core CPU; accuracy is meaningless (a few steps).
"""
from configs import default


def get_config():
  config = default.get_config()
  config.train_split = "train[:512]"
  config.eval_split = "test[:256]"
  config.shuffle_buffer = 512
  config.batch_size = 64
  config.eval_batch_size = 128
  config.model.name = "tiny"
  default.quantize_model(config, weight_bits=4, act_bits=4)
  config.num_epochs = 2
  config.warmup_epochs = 0.25
  config.log_every_steps = 2
  config.checkpoint_every_steps = 4
  return config
