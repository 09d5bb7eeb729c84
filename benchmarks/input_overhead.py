"""Cost of a train step fed by the real input pipeline, relative to a step on a batch in memory.

  python benchmarks/input_overhead.py --config configs/cifar10_resnet20_w4a4.py --steps 40

Both kinds of step run in one process, in alternating blocks, so that other load on the machine
affects both alike; the step is compiled once and shared. Prints a JSON line with the median
seconds per step of each and their ratio (real / in-memory; 1.0 means the pipeline costs nothing).
"""
import itertools
import json
import statistics
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from odgq_jax import logs
from odgq_jax import methods
from odgq_jax import models
from odgq_jax import parallel
from odgq_jax import train
from odgq_jax.data import input_pipeline

config_flags.DEFINE_config_file("config", "configs/cifar10_resnet20_w4a4.py", "Run config.",
                                lock_config=True)
flags.DEFINE_integer("steps", 40, "Timed steps of each kind (after warm-up).")
flags.DEFINE_integer("block", 5, "Steps per alternating block.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logs.quiet_library_logs()
  config = FLAGS.config
  mesh = parallel.create_mesh()
  info = input_pipeline.get_dataset_info(config)
  steps_per_epoch = input_pipeline.steps_per_epoch(config)
  learning_rate_fn = train.create_learning_rate_fn(config, steps_per_epoch)
  tx = train.create_optimizer(config, learning_rate_fn)
  model = models.create_model_from_config(config.model, info.num_classes)
  real_batches = parallel.prefetch_to_mesh(input_pipeline.train_batches(config), mesh)
  memory_batch = next(real_batches)
  state = train.create_train_state(jax.random.PRNGKey(0), model, tx, memory_batch["image"], mesh)
  train_step, _ = train.compile_steps(
      mesh, methods.create_method_for_run(config), learning_rate_fn)
  for batch in itertools.islice(real_batches, 3):  # compile, fill the pipeline's cache
    state, _ = train_step(state, batch)
  jax.block_until_ready(state)

  seconds = {"real": [], "memory": []}
  for _ in range(FLAGS.steps // FLAGS.block):
    for kind in ("real", "memory"):
      for _ in range(FLAGS.block):
        start = time.perf_counter()
        batch = next(real_batches) if kind == "real" else memory_batch
        state, _ = train_step(state, batch)
        jax.block_until_ready(state)
        seconds[kind].append(time.perf_counter() - start)
  real, memory = statistics.median(seconds["real"]), statistics.median(seconds["memory"])
  print(json.dumps({
      "config": config.model.name, "batch_size": config.batch_size, "devices": mesh.size,
      "real_data_step_seconds": round(real, 4), "in_memory_step_seconds": round(memory, 4),
      "ratio": round(real / memory, 3),
      "compilations": train_step._cache_size(),  # pylint: disable=protected-access
  }))


if __name__ == "__main__":
  app.run(main)
