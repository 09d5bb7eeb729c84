"""Evaluates a trained checkpoint, or its export, under the robustness protocol of
docs/evaluation.md.

  python launch/eval.py --checkpoint runs/cifar10_resnet20_w4a4_odgq \
      --substitute fp=results/substitute_fp/export \
      --substitute arch=results/substitute_arch/export \
      --substitute low_bit=results/substitute_low_bit/export --protocol quick \
      --output results/cifar10_resnet20_w4a4_odgq/report.json

Writes report.json (schema in docs/evaluation.md), report.md and robust_vs_eps.png beside --output
(`results/<run>/report.json` for a report that backs a published number: `benchmarks/results.py`
renders the results/ folder into docs/results.md), and logs a progress line with the ETA after
every batch of every attack. Transfer attacks whose substitute is not given are skipped and the
report says so. `--attacks pgd20` runs PGD-20 alone (a partial report for held-out comparisons,
without sanity checks). `--step` evaluates an earlier checkpoint than the latest; a checkpoint that
cannot be read ends the evaluation with one line naming it and the other checkpoints, and exit
status 1.
"""
from odgq_jax import host_allocator

host_allocator.reexec_with_huge_pages()  # before JAX starts; see odgq_jax/host_allocator.py

# pylint: disable=wrong-import-position
import sys

from absl import app
from absl import flags
from absl import logging
import jax

import odgq_jax
from odgq_jax import checkpointing
from odgq_jax import logs
from odgq_jax.data import input_pipeline
from odgq_jax.evaluation import protocol as protocol_lib
from odgq_jax.evaluation import report as report_lib
from odgq_jax.evaluation import robustness
from odgq_jax.export import artefact

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "The --workdir of the training run to evaluate, or its "
                    "export (launch/export.py).")
flags.DEFINE_multi_string("substitute", [],
                          "NAME=DIR substitute checkpoints or exports, NAME in "
                          f"{protocol_lib.SUBSTITUTE_NAMES} (committed: "
                          "results/substitute_NAME/export).")
flags.DEFINE_enum("protocol", "quick", list(protocol_lib.PROTOCOLS), "Evaluation budget.")
flags.DEFINE_integer("num_examples", None, "Evaluate the first N test examples (default: the "
                     "protocol's).")
flags.DEFINE_string("output", "report.json", "Path of the JSON report, e.g. "
                    "results/<run>/report.json; report.md and robust_vs_eps.png go beside it.")
flags.DEFINE_float("eps", 8 / 255, "L-inf radius of the threat model.")
flags.DEFINE_string("split", "test", "TFDS split to evaluate (its first N examples); a sliced "
                    "split such as 'train[45000:]' (held-out images) works too.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: the one the run trained with).")
flags.DEFINE_string("step", "latest", "Checkpoint to evaluate: latest, best or a step number.")
flags.DEFINE_integer("batch_size", 250, "Examples per attack batch.")
flags.DEFINE_integer("seed", 0, "Seed of the attacks' randomness.")
flags.DEFINE_list("attacks", None, "Run only these attacks, comma-separated, from "
                  f"{','.join(protocol_lib.ATTACK_NAMES)}: a partial report without the sanity "
                  "checks or the eps curve (verdict 'unchecked'), for cheap comparisons such as "
                  "PGD-20 on held-out images; never a robustness claim.")
flags.mark_flags_as_required(["checkpoint"])


@flags.validator("attacks", message=f"--attacks must be names from {protocol_lib.ATTACK_NAMES}")
def _known_attacks(names):
  if names is None:
    return True
  try:
    protocol_lib.check_attack_subset(names)
  except ValueError:
    return False
  return True


@flags.validator("step", message="--step must be latest, best or a step number")
def _known_step(step):
  return step in ("latest", "best") or step.isdigit()


def _load(directory: str) -> odgq_jax.Classifier:
  step = FLAGS.step if FLAGS.step in ("latest", "best") else int(FLAGS.step)
  return odgq_jax.load_classifier(directory, step=step)


def _substitutes() -> dict[str, odgq_jax.Classifier]:
  substitutes = {}
  for spec in FLAGS.substitute:
    name, sep, directory = spec.partition("=")
    if not sep or name not in protocol_lib.SUBSTITUTE_NAMES:
      raise app.UsageError(f"--substitute must be NAME=DIR with NAME in "
                           f"{protocol_lib.SUBSTITUTE_NAMES}, got {spec!r}")
    substitutes[name] = odgq_jax.load_classifier(directory)
  return substitutes


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logs.quiet_library_logs()
  try:
    target = _load(FLAGS.checkpoint)
    substitutes = _substitutes()
  except (checkpointing.CheckpointError, artefact.ExportError) as e:
    sys.exit(f"error: {e}")
  protocol = protocol_lib.PROTOCOLS[FLAGS.protocol]
  images, labels = input_pipeline.first_examples(
      target.config, FLAGS.split, FLAGS.num_examples or protocol.num_examples, FLAGS.data_dir)
  target.check_images(images)
  logging.info("Evaluating %s (step %d) on %d examples of %s, protocol %s, eps %.4f, "
               "substitutes %s", FLAGS.checkpoint, target.step, len(images), FLAGS.split,
               protocol.name, FLAGS.eps, sorted(substitutes) or "none")
  report = robustness.evaluate_robustness(
      target.logits_fn, images, labels, protocol=protocol, eps=FLAGS.eps,
      substitutes={name: s.logits_fn for name, s in substitutes.items()},
      key=jax.random.PRNGKey(FLAGS.seed), batch_size=FLAGS.batch_size, binary=target.is_binary,
      attack_subset=FLAGS.attacks)
  report["checkpoint"] = {"directory": FLAGS.checkpoint, "step": target.step}
  report["split"] = FLAGS.split
  if target.model.switchable_bits:
    # Random precision inference, attacked and scored as its exact expectation (EOT).
    report["expectation_over_precisions"] = list(target.model.switchable_bits)
  paths = report_lib.write_report(report, FLAGS.output,
                                  f"{FLAGS.checkpoint} (step {target.step})")
  print(report_lib.markdown(report, f"{FLAGS.checkpoint} (step {target.step})"))
  logging.info("Wrote %s", ", ".join(paths.values()))


if __name__ == "__main__":
  app.run(main)
