"""Trains a model: `python launch/train.py --config configs/<run>.py --workdir DIR`.

Kept thin on purpose: it parses flags and calls `odgq_jax.train.train_and_evaluate`, the function
notebooks call too. Override config fields with `--config.key=value` (an unknown key is an error).
Run it again with the same command to resume from the latest checkpoint in DIR. A checkpoint that
cannot be resumed from, or a loss or parameter that became NaN or infinite, ends the run with one
line saying what happened and which checkpoint to use, and exit status 1.
"""
from odgq_jax import host_allocator

host_allocator.reexec_with_huge_pages()  # before JAX starts; see odgq_jax/host_allocator.py

# pylint: disable=wrong-import-position
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from odgq_jax import checkpointing
from odgq_jax import logs
from odgq_jax import train
from odgq_jax.train import nonfinite

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, config.json and TensorBoard logs.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first (multi-host runs: one process per "
                  "host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logs.quiet_library_logs()
  if FLAGS.distributed:
    jax.distributed.initialize()
  logging.info("JAX process %d of %d, devices: %s; %s=%r", jax.process_index(),
               jax.process_count(), jax.devices(), host_allocator.TUNABLES,
               os.environ.get(host_allocator.TUNABLES))
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (checkpointing.CheckpointError, nonfinite.NonFiniteError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
