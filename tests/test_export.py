"""Deployment export: integer weights, the serialized forward pass, loading and evaluating an export.

Tiny models with moved BatchNorm statistics (a few train-mode passes) stand for trained ones; the
launchers' test runs on the offline CIFAR-10 copy beside the checkout (skipped where it is absent).
"""
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
import odgq_jax
from odgq_jax import checkpointing
from odgq_jax import classifier as classifier_lib
from odgq_jax import models
from odgq_jax import parallel
from odgq_jax import quant
from odgq_jax import train
from odgq_jax.export import artefact
from odgq_jax.export import exporter
from odgq_jax.export import integer_model
from odgq_jax.export import packing
from tests import test_input_pipeline
from tests import test_launch

REPO = Path(__file__).resolve().parents[1]
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
# "Within 1e-5": the export computes the training-time arithmetic, so in practice it is exact.
LOGITS_TOLERANCE = 1e-5


def tiny_config(weights="w4a4"):
  """The tiny model with W4A4 (uniform weights, LSQ activations), binary hidden layers (the
  quantizers of `default.binarize_model`: 1-bit weights with their scale, 1-bit activations with
  a learned threshold, a signed 8-bit LSQ input to the classifier) or full precision."""
  config = default.get_config()
  config.model.name = "tiny"
  if weights == "w4a4":
    default.quantize_model(config, weight_bits=4, act_bits=4)
  elif weights == "binary":
    default.binarize_model(config, "tiny", learnable_threshold=True)
    del config.model.rprelu  # an option of the binary models only
  return config


def images(num=16, seed=0):
  return np.random.default_rng(seed).uniform(size=(num, *IMAGE_SHAPE)).astype(np.float32)


def trained_variables(model, seed=0):
  """Initial variables with BatchNorm statistics moved by three train-mode passes (at every
  precision of a switchable-precision model)."""
  variables = models.init_variables(model, jax.random.PRNGKey(seed), images(32, seed))
  for i in range(3):
    for precision in model.switchable_bits or (None,):
      _, updated = model.apply(variables, images(32, seed + 1 + i), train=True,
                               mutable=["batch_stats"],
                               **({} if precision is None else {"precision": precision}))
      variables = {"params": variables["params"], **updated}
  return variables


def make_classifier(config):
  model = models.create_model_for_run(config, NUM_CLASSES)
  return classifier_lib.Classifier(config=config, num_classes=NUM_CLASSES,
                                   image_shape=IMAGE_SHAPE, step=0, model=model,
                                   variables=trained_variables(model))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A training workdir (config, dataset info, a full train state checkpoint) of the tiny W4A4
  model."""
  directory = tmp_path_factory.mktemp("run")
  config = tiny_config()
  model = models.create_model_for_run(config, NUM_CLASSES)
  tx = train.create_optimizer(config, lambda count: 0.1)
  mesh = parallel.create_mesh(jax.devices()[:1])
  state = train.create_train_state(jax.random.PRNGKey(0), model, tx, jnp.asarray(images(32)),
                                   mesh)
  state = state.replace(batch_stats=trained_variables(model)["batch_stats"], step=state.step + 7)
  checkpointing.save_or_check_config(config, str(directory))
  checkpointing.save_dataset_info(NUM_CLASSES, IMAGE_SHAPE, str(directory))
  checkpointer = checkpointing.Checkpointer(str(directory))
  checkpointer.save(state)
  checkpointer.wait_until_finished()
  checkpointer.close()
  return directory


@pytest.fixture(scope="module")
def exported(workdir, tmp_path_factory):
  out = tmp_path_factory.mktemp("export") / "tiny_w4a4"
  exporter.export_checkpoint(str(workdir), str(out))
  return out


# Packing and integer forms.


@pytest.mark.parametrize("bits", range(1, 9))
def test_packing_round_trip_and_size(bits):
  codes = np.random.default_rng(bits).integers(0, 2**bits, size=(3, 5, 7)).astype(np.uint8)
  packed = packing.pack(codes, bits)
  assert packed.dtype == np.uint8 and packed.shape == (math.ceil(codes.size * bits / 8),)
  np.testing.assert_array_equal(packing.unpack(packed, bits, codes.shape), codes)
  np.testing.assert_array_equal(jax.jit(packing.unpack, static_argnums=(1, 2))(
      packed, bits, codes.shape), codes)


def test_packing_layout_two_nibbles_and_eight_bits_per_byte():
  np.testing.assert_array_equal(packing.pack(np.array([1, 2, 15]), 4), [0x21, 0x0F])
  np.testing.assert_array_equal(packing.pack(np.array([1, 0, 0, 0, 0, 0, 0, 1, 1]), 1),
                                [0x81, 0x01])


def test_packing_rejects_codes_that_do_not_fit():
  with pytest.raises(ValueError, match=r"integers in \[0, 15\]"):
    packing.pack(np.array([16]), 4)
  with pytest.raises(ValueError, match="take 2 bytes"):
    packing.unpack(np.zeros(3, np.uint8), 4, (4,))


@pytest.mark.parametrize("name,options,params", [
    ("uniform", {"bits": 4}, {}),
    ("uniform", {"bits": 8, "per_channel": False}, {}),
    ("lsq", {"bits": 4, "signed": True}, {"step": 0.07}),
    ("lsq", {"bits": 3}, {"step": -0.2}),  # the step actually used is |step|
    ("pact", {"bits": 3}, {"alpha": 0.9}),
    ("dorefa", {"bits": 2}, {}),
    ("binary", {}, {}),
    ("binary", {"scale": True}, {}),
    ("binary", {"learnable_threshold": True}, {"threshold": np.linspace(-0.5, 0.5, 6)}),
])
def test_integer_form_is_the_quantizer_output_bit_for_bit(name, options, params):
  quantizer = quant.make_quantizer(name, **options)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 4, 6))
  params = {key: jnp.asarray(value, jnp.float32) for key, value in params.items()}
  integer = quantizer.integer_form(x, params)
  assert integer.codes.dtype == jnp.uint8 and int(integer.codes.max()) < 2**integer.bits
  np.testing.assert_array_equal(integer.dequantize(), quantizer(x, params))
  np.testing.assert_array_equal(jax.jit(lambda x: quantizer.integer_form(x, params).dequantize())(
      x), jax.jit(lambda x: quantizer(x, params))(x))


def test_full_precision_has_no_integer_form():
  with pytest.raises(ValueError, match="no integer levels"):
    quant.make_quantizer("none").integer_form(jnp.ones(3))


# The deployment variables and the exported forward pass.


def flat(tree):
  return {"/".join(path): value for path, value in flax.traverse_util.flatten_dict(tree).items()}


def export_and_check_logits(classifier, tmp_path, num_images, seed):
  """Exports `classifier` to tmp_path/out, asserts the reloaded export's logits equal its logits on
  `num_images` random images, and returns the export's stored parameters, flattened."""
  exporter.export_classifier(classifier, str(tmp_path / "out"))
  deployed = odgq_jax.load_classifier(str(tmp_path / "out"))
  x = images(num_images, seed=seed)
  np.testing.assert_allclose(deployed.logits(x), classifier.logits(x), rtol=0,
                             atol=LOGITS_TOLERANCE)
  return flat(artefact.read_weights(str(tmp_path / "out"))["params"])


@pytest.mark.parametrize("weights", ["w4a4", "binary", "fp"])
def test_exported_logits_equal_the_fake_quantized_logits(weights, tmp_path):
  stored = export_and_check_logits(make_classifier(tiny_config(weights)), tmp_path, 64, seed=5)
  kernel_bits = {"w4a4": 4, "binary": 1}.get(weights)
  if kernel_bits is None:  # full precision: BatchNorm folded into the convs
    assert "stem/conv/kernel" in stored and "stem/bn/multiplier" not in stored
    return
  # Quantized kernels are stored as packed codes only, k bits each; the BatchNorm as its affine.
  hidden = "conv_bn/conv/"
  assert hidden + "kernel" not in stored and "stem/conv/kernel" not in stored
  assert int(stored[hidden + "kernel_bits"]) == kernel_bits
  num_weights = math.prod(stored[hidden + "kernel_shape"])
  assert stored[hidden + "kernel_codes"].shape == (math.ceil(num_weights * kernel_bits / 8),)
  assert int(stored["stem/conv/kernel_bits"]) == 8
  assert {"mean", "multiplier", "bias"} <= {k.split("/")[-1] for k in stored if "/bn/" in k}


def test_a_switchable_precision_model_exports_its_expectation(tmp_path):
  config = tiny_config()
  config.model.switchable_bits = (2, 4)
  stored = export_and_check_logits(make_classifier(config), tmp_path, 32, seed=6)
  assert {"conv_bn/conv/kernel_codes_2bit", "conv_bn/conv/kernel_codes_4bit"} <= set(stored)


def test_the_export_of_a_checkpoint_gives_its_logits_and_gradients(workdir, exported):
  checkpoint = odgq_jax.load_classifier(str(workdir))
  deployed = odgq_jax.load_classifier(str(exported))
  assert deployed.step == checkpoint.step == 7 and deployed.variables is None
  x = images(24, seed=7)
  np.testing.assert_allclose(deployed.logits(x), checkpoint.logits(x), rtol=0,
                             atol=LOGITS_TOLERANCE)
  # Attacks differentiate the export (its serialized VJP: the quantizers' straight-through
  # estimators) as they differentiate the checkpoint.
  labels = np.arange(24) % NUM_CLASSES
  loss = lambda logits_fn: lambda x: jnp.sum(
      jax.nn.log_softmax(logits_fn(x))[jnp.arange(24), labels])
  grad_export = jax.jit(jax.grad(loss(deployed.logits_fn)))(x)
  grad_checkpoint = jax.jit(jax.grad(loss(checkpoint.logits_fn)))(x)
  assert np.abs(grad_checkpoint).max() > 0
  np.testing.assert_allclose(grad_export, grad_checkpoint, rtol=1e-4, atol=1e-6)


def test_the_stored_weights_alone_give_the_logits(workdir, exported):
  """Serving reads only the integer weights: the forward pass rebuilt from weights/ gives the
  checkpoint's logits, with no float kernel of a quantized layer anywhere in them."""
  checkpoint = odgq_jax.load_classifier(str(workdir))
  weights = artefact.read_weights(str(exported))
  forward = integer_model.deployed_logits_fn(checkpoint.model, weights)
  x = images(8, seed=8)
  np.testing.assert_allclose(jax.jit(forward)(x), checkpoint.logits(x), rtol=0,
                             atol=LOGITS_TOLERANCE)
  assert not [path for path in flat(weights) if path.endswith("/kernel")]


def test_the_serialized_forward_pass_runs_with_jax_and_numpy_alone(workdir, exported, tmp_path):
  x = images(5, seed=9)
  np.save(tmp_path / "images.npy", x)
  script = textwrap.dedent(f"""
      import sys
      import jax
      import numpy as np
      exported = jax.export.deserialize(open({str(exported / "forward.jax_exported")!r}, "rb").read())
      np.save({str(tmp_path / "logits.npy")!r}, np.asarray(exported.call(np.load({str(tmp_path / "images.npy")!r}))))
      print(sorted(name.split(".")[0] for name in sys.modules if name.split(".")[0] in
                   ("odgq_jax", "flax", "optax", "orbax", "tensorflow", "configs")))
      """)
  proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, XLA_FLAGS=""))
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == "[]"
  np.testing.assert_allclose(np.load(tmp_path / "logits.npy"),
                             odgq_jax.load_classifier(str(workdir)).logits(x), rtol=0,
                             atol=LOGITS_TOLERANCE)


def test_load_classifier_on_a_checkpoint_reads_no_training_code(workdir):
  script = textwrap.dedent(f"""
      import sys
      import numpy as np
      import odgq_jax
      classifier = odgq_jax.load_classifier({str(workdir)!r})
      classifier.logits(np.zeros((2, 32, 32, 3), np.float32))
      print(sorted(name for name in sys.modules  # odgq_jax.train* covers train_state
                   if name.startswith(("odgq_jax.train", "odgq_jax.methods"))))
      """)
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, XLA_FLAGS=""))
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == "[]"


def test_metadata_describes_the_model(exported):
  metadata = json.loads((exported / "metadata.json").read_text())
  assert metadata["architecture"] == "tiny" and metadata["num_classes"] == NUM_CLASSES
  assert metadata["bit_widths"] == {"weights": 4, "activations": 4, "first_last_weights": 8,
                                    "first_last_activations": 8}
  assert metadata["normalisation"]["mean"] == list(models.CIFAR10_MEAN)
  assert metadata["method"] == "natural" and metadata["eps"] is None
  assert metadata["dataset"] == "cifar10_jpeg" and metadata["evaluation"] is None
  assert metadata["platforms"] == ["cpu", "cuda", "tpu"]
  assert set(metadata["files"]) >= {"forward.jax_exported"}
  assert any(name.startswith("weights/") for name in metadata["files"])


def test_a_report_of_another_step_is_refused(workdir, tmp_path):
  report = tmp_path / "report.json"
  report.write_text(json.dumps({"checkpoint": {"directory": str(workdir), "step": 3}}))
  with pytest.raises(ValueError, match="evaluates step 3, the export is of step 7"):
    exporter.export_checkpoint(str(workdir), str(tmp_path / "out"), str(report))


def test_an_output_directory_that_is_not_an_export_is_refused(workdir, tmp_path):
  (tmp_path / "notes.txt").write_text("keep me")
  with pytest.raises(artefact.ExportError, match="is not an export"):
    exporter.export_checkpoint(str(workdir), str(tmp_path))


def damage(directory, how):
  forward = directory / "forward.jax_exported"
  if how == "truncated":
    forward.write_bytes(forward.read_bytes()[:1000])
  elif how == "modified":
    data = bytearray(forward.read_bytes())
    data[len(data) // 2] ^= 0xFF
    forward.write_bytes(bytes(data))
  elif how == "weights missing":
    next(p for p in sorted((directory / "weights").rglob("*")) if p.is_file()).unlink()
  elif how == "metadata damaged":
    (directory / "metadata.json").write_text('{"format": "odgq-jax exp')
  elif how == "metadata missing":
    (directory / "metadata.json").unlink()


@pytest.mark.parametrize("how,message", [
    ("truncated", r"forward.jax_exported has 1000 bytes, metadata.json records \d+ \(truncated"),
    ("modified", "the SHA-256 of forward.jax_exported differs"),
    ("weights missing", r"is incomplete: weights/.* is missing"),
    ("metadata damaged", "metadata.json is damaged: not valid JSON"),
    ("metadata missing", "is not a complete export: it has no metadata.json"),
])
def test_a_damaged_export_is_refused_with_a_clear_error(exported, tmp_path, how, message):
  copy = tmp_path / "copy"
  shutil.copytree(exported, copy)
  damage(copy, how)
  with pytest.raises(artefact.ExportError, match=message):
    odgq_jax.load_classifier(str(copy))


# The launchers.


def run_launcher(name, *args):
  proc = subprocess.run([sys.executable, str(REPO / "launch" / name), *args], cwd=REPO,
                        capture_output=True, text=True, timeout=900,
                        env=test_launch.launch_environment())
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return proc


@test_input_pipeline.requires_offline_cifar10
def test_eval_on_an_export_gives_the_report_of_its_checkpoint(workdir, tmp_path):
  cheap = ["--attacks", "fgsm,pgd20", "--num_examples", "16", "--batch_size", "16"]
  run_launcher("eval.py", "--checkpoint", str(workdir), "--output",
               str(tmp_path / "checkpoint" / "report.json"), *cheap)
  run_launcher("export.py", "--checkpoint", str(workdir), "--output", str(tmp_path / "export"),
               "--report", str(tmp_path / "checkpoint" / "report.json"))
  run_launcher("eval.py", "--checkpoint", str(tmp_path / "export"), "--output",
               str(tmp_path / "export_eval" / "report.json"), *cheap)
  on_checkpoint = json.loads((tmp_path / "checkpoint" / "report.json").read_text())
  on_export = json.loads((tmp_path / "export_eval" / "report.json").read_text())
  for key in ("protocol", "num_examples", "eps", "split", "clean", "attacks", "skipped",
              "worst_case", "verdict"):
    assert on_export[key] == on_checkpoint[key], key
  assert on_export["checkpoint"] == {"directory": str(tmp_path / "export"), "step": 7}
  evaluation = json.loads((tmp_path / "export" / "metadata.json").read_text())["evaluation"]
  assert evaluation["clean"] == on_checkpoint["clean"]
  assert evaluation["attacks"] == on_checkpoint["attacks"]
  assert evaluation["worst_case"] == on_checkpoint["worst_case"]


def test_eval_refuses_a_damaged_export_in_one_line(exported, tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(exported, copy)
  damage(copy, "truncated")
  proc = subprocess.run([sys.executable, str(REPO / "launch" / "eval.py"), "--checkpoint",
                         str(copy), "--output", str(tmp_path / "report.json")], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env=test_launch.launch_environment())
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith("error: export ")
  assert "truncated" in proc.stderr and "Traceback" not in proc.stderr
