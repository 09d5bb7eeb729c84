"""Size on disk of the deployment exports of ResNet-20: full precision, W4A4 and binary; and how
closely each export's logits follow the training-time eval logits.

  python benchmarks/export_size.py --output results/benchmarks/export_size.json

Builds each model of its config (configs/cifar10_resnet20_fp.py, cifar10_resnet20_w4a4.py,
cifar10_resnet20_binary.py) with initial variables whose BatchNorm statistics three train-mode
passes have moved, exports it with `odgq_jax.export` and records the bytes of each file of the
export (sizes do not depend on the trained values): the serialized forward pass (with its VJP; the
integer weights are constants in both), the orbax checkpoint of the weights and metadata.json,
beside the parameter count and its float32 size. Then both classifiers, the export and the model
it came from, score the same random images in [0, 1]: the largest logit difference and the number
of images with a difference above 1e-5. docs/results.md renders the table from the JSON
(benchmarks/results.py).
"""
import importlib
import json
import os
import tempfile

from absl import app
from absl import flags
import jax
import numpy as np

from measure import machine_info  # benchmarks/ is on sys.path when run as a script
from odgq_jax import classifier as classifier_lib
from odgq_jax import models
from odgq_jax.export import artefact
from odgq_jax.export import exporter

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "results/benchmarks/export_size.json", "Path of the JSON results.")
flags.DEFINE_list("configs", ["cifar10_resnet20_fp", "cifar10_resnet20_w4a4",
                              "cifar10_resnet20_binary"], "Configs (modules of configs/) to export.")

flags.DEFINE_integer("num_images", 256, "Random images on which the logits are compared.")

NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
TOLERANCE = 1e-5
BATCH_SIZE = 64


def random_images(num: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).uniform(size=(num, *IMAGE_SHAPE)).astype(np.float32)


def moved_variables(model) -> dict:
  """Initial variables, with BatchNorm statistics moved by three train-mode passes."""
  variables = models.init_variables(model, jax.random.PRNGKey(0), random_images(BATCH_SIZE, 0))
  for seed in range(1, 4):
    _, updated = model.apply(variables, random_images(BATCH_SIZE, seed), train=True,
                             mutable=["batch_stats"])
    variables = {"params": variables["params"], **updated}
  return variables


def logit_agreement(exported: classifier_lib.Classifier,
                    original: classifier_lib.Classifier) -> dict:
  """The largest |exported - original| logit over FLAGS.num_images random images, and the images
  where it exceeds TOLERANCE."""
  differences = []
  for start in range(0, FLAGS.num_images, BATCH_SIZE):
    images = random_images(min(BATCH_SIZE, FLAGS.num_images - start), 100 + start)
    differences.append(np.abs(np.asarray(exported.logits(images))
                              - np.asarray(original.logits(images))).max(axis=1))
  differences = np.concatenate(differences)
  return {"images": int(differences.size), "max_abs_logit_difference": float(differences.max()),
          "tolerance": TOLERANCE, "images_beyond_tolerance": int((differences > TOLERANCE).sum())}


def export_size(config_name: str, directory: str) -> dict:
  """Exports the model of `config_name` to `directory`: its sizes in bytes and the agreement of
  its logits."""
  config = importlib.import_module(f"configs.{config_name}").get_config()
  model = models.create_model_for_run(config, NUM_CLASSES)
  variables = moved_variables(model)
  classifier = classifier_lib.Classifier(config=config, num_classes=NUM_CLASSES,
                                         image_shape=IMAGE_SHAPE, step=0, model=model,
                                         variables=variables)
  metadata = exporter.export_classifier(classifier, directory)
  agreement = logit_agreement(classifier_lib.load_classifier(directory), classifier)
  files = metadata["files"]
  parameters = sum(int(np.size(x)) for x in jax.tree.leaves(variables["params"]))
  forward = files[artefact.FORWARD_FILE]["bytes"]
  weights = sum(record["bytes"] for name, record in files.items()
                if name.startswith(artefact.WEIGHTS_DIR + "/"))
  metadata_bytes = os.path.getsize(os.path.join(directory, artefact.METADATA_FILE))
  return {"config": f"configs/{config_name}.py", "architecture": metadata["architecture"],
          "bit_widths": metadata["bit_widths"], "parameters": parameters,
          "float32_parameter_bytes": 4 * parameters, "forward_bytes": forward,
          "weights_bytes": weights, "metadata_bytes": metadata_bytes,
          "total_bytes": forward + weights + metadata_bytes, "logits": agreement}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  results = {"machine": machine_info(), "platforms": list(artefact.PLATFORMS),
             "vjp_order": artefact.VJP_ORDER, "exports": {}}
  with tempfile.TemporaryDirectory() as directory:
    for name in FLAGS.configs:
      results["exports"][name] = export_size(name, os.path.join(directory, name))
      print(name, json.dumps(results["exports"][name]))
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(results, f, indent=2)
  print(f"Wrote {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
