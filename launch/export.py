"""Exports a trained checkpoint for deployment, as an artefact that runs without this package.

  python launch/export.py --checkpoint runs/cifar10_resnet20_w4a4_odgq \
      --report results/cifar10_resnet20_w4a4_odgq/report.json --output exports/cifar10_resnet20_w4a4_odgq

Writes OUT/forward.jax_exported (the eval-mode forward pass, integer weights baked in, for cpu, cuda
and tpu), OUT/weights/ (the integer weights, an orbax checkpoint) and OUT/metadata.json (the model,
and the accuracies of --report if given); docs/export.md. `launch/eval.py --checkpoint OUT` and
`odgq_jax.load_classifier(OUT)` take the export as they take the checkpoint.
"""
from absl import app
from absl import flags
from absl import logging

from odgq_jax import logs
from odgq_jax.export import exporter

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "The --workdir of the training run to export.")
flags.DEFINE_string("output", None, "The export directory (replaced if it holds an export).")
flags.DEFINE_string("report", None, "report.json of launch/eval.py on the same checkpoint step: "
                    "its accuracies go into metadata.json.")
flags.DEFINE_string("step", "latest", "Checkpoint to export: latest, best or a step number.")
flags.mark_flags_as_required(["checkpoint", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logs.quiet_library_logs()
  step = FLAGS.step if FLAGS.step in ("latest", "best") else int(FLAGS.step)
  metadata = exporter.export_checkpoint(FLAGS.checkpoint, FLAGS.output, FLAGS.report, step)
  for name, record in metadata["files"].items():
    logging.info("%s: %d bytes", name, record["bytes"])
  logging.info("Exported step %d of %s to %s (%d bytes)", metadata["checkpoint"]["step"],
               FLAGS.checkpoint, FLAGS.output,
               sum(record["bytes"] for record in metadata["files"].values()))


if __name__ == "__main__":
  app.run(main)
