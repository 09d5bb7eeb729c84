"""Cost of PGD-20 relative to 20 bare forward-backward passes over the same images.

  python benchmarks/attack_cost.py --config configs/cifar10_resnet20_w4a4.py --num_examples 1000

The model is the config's (randomly initialised: cost does not depend on the weights), in eval mode
as attacks see it. Both are jitted, timed over all `num_examples` in batches of `batch_size`, in
alternating repeats (median), in one process. The baseline is exactly the work PGD cannot avoid:
20 input-gradient computations of the cross-entropy, written as a Python loop (unrolled when
traced, no control flow in the compiled graph), so that it costs what 20 separate forward-backward
passes cost even on a backend that runs loops slowly (XLA:CPU did: `odgq_jax/models/conv.py`).
Prints a JSON line with both times and the ratio (PGD-20 / baseline).
"""
import json
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

from odgq_jax import attacks
from odgq_jax import logs
from odgq_jax import models
from odgq_jax.evaluation import robustness

config_flags.DEFINE_config_file("config", "configs/cifar10_resnet20_w4a4.py", "Model config.",
                                lock_config=True)
flags.DEFINE_integer("num_examples", 1000, "Images attacked.")
flags.DEFINE_integer("batch_size", 250, "Images per batch.")
flags.DEFINE_integer("repeats", 3, "Timed repeats of each (median).")
FLAGS = flags.FLAGS
NUM_STEPS = 20


def main(argv):
  del argv
  logs.quiet_library_logs()
  model = models.create_model_from_config(FLAGS.config.model, num_classes=10)
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(FLAGS.num_examples, 32, 32, 3)).astype(np.float32)
  labels = rng.integers(0, 10, FLAGS.num_examples).astype(np.int32)
  variables = model.init(jax.random.PRNGKey(0), jnp.asarray(images[:FLAGS.batch_size]),
                         train=False)
  logits_fn = lambda x: model.apply(variables, x, train=False)
  settings = robustness.pgd_settings_for_eps(8 / 255)

  @jax.jit
  def pgd20(x, y, key):
    return attacks.pgd(logits_fn, x, y, key, settings)

  @jax.jit
  def gradients20(x, y):
    grad_fn = jax.grad(lambda x: jnp.sum(attacks.cross_entropy(logits_fn(x), y)))
    g = jnp.zeros_like(x)
    for _ in range(NUM_STEPS):
      g = g + grad_fn(x + 1e-8 * g)  # each depends on the last: no common subexpression
    return g

  def time_all(fn):
    start = time.perf_counter()
    for lo in range(0, FLAGS.num_examples, FLAGS.batch_size):
      jax.block_until_ready(fn(images[lo:lo + FLAGS.batch_size], labels[lo:lo + FLAGS.batch_size]))
    return time.perf_counter() - start

  run_pgd = lambda x, y: pgd20(x, y, jax.random.PRNGKey(0))
  time_all(run_pgd), time_all(gradients20)  # compile
  pgd_times, grad_times = [], []
  for _ in range(FLAGS.repeats):
    pgd_times.append(time_all(run_pgd))
    grad_times.append(time_all(gradients20))
  pgd_seconds, grad_seconds = statistics.median(pgd_times), statistics.median(grad_times)
  print(json.dumps({"model": FLAGS.config.model.name, "num_examples": FLAGS.num_examples,
                    "pgd20_seconds": round(pgd_seconds, 2),
                    "forward_backward_x20_seconds": round(grad_seconds, 2),
                    "ratio": round(pgd_seconds / grad_seconds, 3)}))


if __name__ == "__main__":
  app.run(main)
