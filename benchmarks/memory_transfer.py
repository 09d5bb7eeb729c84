"""Do an epoch-old memory's perturbations still fool the updated network?

ODG-Q's memory domain trains each example on the perturbation its previous visit left, one epoch
of updates old (`odgq_jax/methods/perturbation_memory.py`). That pays off only if perturbations
crafted against the network of one epoch transfer to the network of the next. This measures it on
a memory run's checkpoints: for the first --num_examples training images (un-augmented, the
frame the table is stored in), the accuracy of the network of checkpoint B (eval mode) on

- clean images;
- x + delta_A, the table of an earlier checkpoint A (one epoch earlier: the perturbations the
  next epoch trains on, against the network they will meet);
- x + delta_B, the table of checkpoint B itself (each row stepped at most one epoch before B);
- FGSM-RS examples crafted against network B (uniform start, one 10/255 step, the same eps);
- PGD-10 examples against network B (2/255 steps, uniform start), for reference.

  python benchmarks/memory_transfer.py --workdir runs/heldout_memory --steps 702,1053 --output R.json

Every pair of consecutive --steps is one (A, B) row; each step must be a kept checkpoint. The run's
config (saved in the workdir) gives the data, model and eps.
"""
import json

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from odgq_jax import checkpointing
from odgq_jax import logs
from odgq_jax import methods
from odgq_jax import models
from odgq_jax import parallel
from odgq_jax import train
from odgq_jax.data import input_pipeline
from odgq_jax.methods import adversarial
from odgq_jax.methods import perturbation_memory

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Workdir of a run with ODG-Q's memory domain.")
flags.DEFINE_list("steps", None, "Checkpoint steps, e.g. one per epoch: 702,1053,1404.")
flags.DEFINE_integer("num_examples", 1000, "Training images measured (the first ones).")
flags.DEFINE_integer("seed", 0, "Seed of the FGSM-RS and PGD random starts.")
flags.DEFINE_string("output", "", "Write the results as JSON here.")
flags.mark_flags_as_required(["workdir", "steps"])

FGSM_RS_STEP = 10 / 255
PGD_STEPS, PGD_STEP_SIZE = 10, 2 / 255


def first_training_images(config, num_examples):
  """The first `num_examples` images of config.train_split, un-augmented, and their labels."""
  config = config.copy_and_resolve_references()
  config.eval_split = config.train_split
  images, labels = [], []
  for batch in input_pipeline.eval_batches(config):
    images.append(batch["image"][batch["mask"]])
    labels.append(batch["label"][batch["mask"]])
    if sum(len(x) for x in labels) >= num_examples:
      break
  return (jnp.asarray(np.concatenate(images)[:num_examples]),
          jnp.asarray(np.concatenate(labels)[:num_examples]))


def restore(config, workdir, step, image_shape, num_classes, num_train_examples):
  """The train state of checkpoint `step`, on one device."""
  mesh = parallel.create_mesh(jax.devices()[:1])
  model = models.create_model_from_config(config.model, num_classes)
  tx = train.create_optimizer(config, lambda count: 0.0)
  method = methods.create_method_for_run(config)
  method_state = method.init_method_state((config.batch_size, *image_shape),
                                          num_classes=num_classes,
                                          num_train_examples=num_train_examples)
  template = train.abstract_train_state(model, tx, image_shape, mesh, method_state)
  return checkpointing.Checkpointer(workdir, read_only=True).restore(template, step=step)


def accuracy(state, images, labels):
  logits = state.apply_fn(state.variables, images, train=False)
  return float(jnp.mean(jnp.argmax(logits, -1) == labels))


def main(argv):
  del argv
  logs.quiet_library_logs()
  config = checkpointing.load_config(FLAGS.workdir)
  num_classes, image_shape = checkpointing.load_dataset_info(FLAGS.workdir)
  num_train_examples = input_pipeline.get_dataset_info(config).num_train_examples
  eps = config.method.eps
  images, labels = first_training_images(config, FLAGS.num_examples)
  steps = [int(s) for s in FLAGS.steps]
  states = {s: restore(config, FLAGS.workdir, s, image_shape, num_classes, num_train_examples)
            for s in steps}

  def memory_images(state):
    table = state.method_state["memory"][:FLAGS.num_examples]
    stored = perturbation_memory.stored_values(table)
    visited = state.method_state["memory_visited"][:FLAGS.num_examples]
    return jnp.clip(images + stored, 0, 1), float(jnp.mean(visited))

  rows = []
  key = jax.random.PRNGKey(FLAGS.seed)
  for step_a, step_b in zip(steps, steps[1:]):
    network = states[step_b]
    logits_fn = lambda x, s=network: s.apply_fn(s.variables, x, train=False)
    old_memory, visited_a = memory_images(states[step_a])
    own_memory, visited_b = memory_images(network)
    fgsm_rs = adversarial.pgd_examples(logits_fn, images, labels, key, eps=eps,
                                       step_size=FGSM_RS_STEP, num_steps=1)
    pgd = adversarial.pgd_examples(logits_fn, images, labels, key, eps=eps,
                                   step_size=PGD_STEP_SIZE, num_steps=PGD_STEPS)
    row = {"table_step": step_a, "network_step": step_b,
           "visited_fraction_at_table_step": visited_a,
           "visited_fraction_at_network_step": visited_b,
           "clean": accuracy(network, images, labels),
           "memory_one_checkpoint_old": accuracy(network, old_memory, labels),
           "memory_own": accuracy(network, own_memory, labels),
           "fgsm_rs": accuracy(network, fgsm_rs, labels),
           "pgd10": accuracy(network, pgd, labels),
           "mean_abs_memory_pixels": float(jnp.mean(jnp.abs(old_memory - images)) * 255)}
    rows.append(row)
    print(json.dumps(row), flush=True)
  report = {"workdir": FLAGS.workdir, "split": config.train_split,
            "num_examples": FLAGS.num_examples, "eps": eps, "rows": rows}
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(report, f, indent=2)


if __name__ == "__main__":
  app.run(main)
