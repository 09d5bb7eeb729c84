"""`launch/train.py` end to end with the smoke config: a run, a kill -9 and resume, and bad input.

These run the launcher as a user does, in a subprocess, on the offline CIFAR-10 copy beside the
checkout (skipped where it is absent, failed in CI: tests/offline_data.py).
"""
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import odgq_jax
from odgq_jax import host_allocator
from tests import offline_data

REPO = Path(__file__).resolve().parents[1]
pytestmark = offline_data.requires_offline_cifar10

SMOKE_STEPS = 16  # 512 images / batch 64 * 2 epochs
# Free-AT with its default 4 replays: 4 minibatches of 4 updates, a checkpoint after each.
REPLAYING_METHOD = "--config.method.name=free_at"


def launch(workdir, *overrides):
  return subprocess.Popen(
      [sys.executable, str(REPO / "launch" / "train.py"), "--config",
       str(REPO / "configs" / "smoke.py"), "--workdir", str(workdir), *overrides],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=launch_environment())


def launch_environment():
  """The test's environment for a launcher, without GLIBC_TUNABLES (the launcher sets it)."""
  environ = {k: v for k, v in os.environ.items() if k != host_allocator.TUNABLES}
  return dict(environ, XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="2")


def run_to_end(workdir, *overrides):
  proc = launch(workdir, *overrides)
  output, _ = proc.communicate(timeout=600)
  return proc.returncode, output


def finished_steps(workdir):
  directory = Path(workdir) / "checkpoints"
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def final_params(workdir):
  step = finished_steps(workdir)[-1]
  restored = ocp.StandardCheckpointer().restore(
      Path(workdir) / "checkpoints" / str(step) / "default")
  return step, restored


def eval_accuracies(output):
  """{step: accuracy} of the run's "eval at step" log lines."""
  return {int(step): float(accuracy) for step, accuracy in re.findall(
      r"eval at step (\d+) on \S+: loss \S+ accuracy ([\d.]+)", output)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  code, output = run_to_end(workdir)
  assert code == 0, output
  return workdir, output


@pytest.fixture(scope="module")
def uninterrupted_replaying(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted_replaying")
  code, output = run_to_end(workdir, REPLAYING_METHOD)
  assert code == 0, output
  return workdir, output


def test_smoke_run_logs_progress_and_checkpoints(uninterrupted):
  workdir, output = uninterrupted
  assert f"step {SMOKE_STEPS}/{SMOKE_STEPS}" in output
  assert "img/s" in output and "ETA" in output
  assert "eval at step" in output
  assert (workdir / "config.json").is_file()
  assert finished_steps(workdir)[-1] == SMOKE_STEPS
  assert list(workdir.glob("events.out.tfevents.*")), "no TensorBoard event file"


def test_launcher_runs_with_huge_pages_for_the_host_allocator(uninterrupted):
  _, output = uninterrupted
  applies = host_allocator.huge_page_environment(
      launch_environment(), platform.system(), platform.libc_ver(),
      host_allocator.installed_accelerator_plugins())
  expected = repr(host_allocator.HUGE_PAGES) if applies else "None"
  assert f"GLIBC_TUNABLES={expected}" in output


def check_kill_and_resume(reference_workdir, workdir, *overrides):
  """Kills a run with SIGKILL after its first checkpoint, resumes it, and checks that it resumed
  from its last saved step and ended with the state of the uninterrupted `reference_workdir`."""
  proc = launch(workdir, *overrides)
  deadline = time.time() + 300
  while not finished_steps(workdir) and time.time() < deadline and proc.poll() is None:
    time.sleep(0.2)
  assert proc.poll() is None, "the run ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = finished_steps(workdir)[-1]
  assert killed_at < SMOKE_STEPS

  code, output = run_to_end(workdir, *overrides)
  assert code == 0, output
  restored = re.findall(r"Restored checkpoint of step (\d+) from", output)
  assert restored == [str(killed_at)], output
  step_a, state_a = final_params(reference_workdir)
  step_b, state_b = final_params(workdir)
  assert step_a == step_b == SMOKE_STEPS
  flat_a, flat_b = ocp.tree.to_flat_dict(state_a), ocp.tree.to_flat_dict(state_b)
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    np.testing.assert_allclose(flat_a[key], flat_b[key], rtol=1e-5, atol=1e-6, err_msg=str(key))


def test_kill_and_resume_gives_the_same_result(uninterrupted, tmp_path):
  check_kill_and_resume(uninterrupted[0], tmp_path / "killed")


def test_kill_and_resume_of_a_replaying_method_gives_the_same_result(uninterrupted_replaying,
                                                                      tmp_path):
  # The state compared includes Free-AT's perturbation, carried from minibatch to minibatch.
  check_kill_and_resume(uninterrupted_replaying[0], tmp_path / "killed", REPLAYING_METHOD)


def test_unknown_config_key_is_an_error(tmp_path):
  code, output = run_to_end(tmp_path, "--config.learning_rat=0.1")
  assert code != 0
  assert "learning_rat" in output


def test_bits_out_of_range_is_an_error(tmp_path):
  code, output = run_to_end(tmp_path, "--config.model.weight_quantizer.bits=9")
  assert code != 0
  assert "bits must be an integer in [2, 8]" in output


def test_load_classifier_gives_the_deployed_eval_mode_model(uninterrupted):
  classifier = odgq_jax.load_classifier(str(uninterrupted[0]))
  assert classifier.step == SMOKE_STEPS
  assert classifier.num_classes == 10 and classifier.image_shape == (32, 32, 3)
  images = np.random.default_rng(0).uniform(size=(3, 32, 32, 3)).astype(np.float32)
  logits = classifier.logits(images)
  assert logits.shape == (3, 10) and np.all(np.isfinite(logits))
  np.testing.assert_allclose(jax.jit(classifier.logits_fn)(images), logits, rtol=1e-5, atol=1e-5)
  best = odgq_jax.load_classifier(str(uninterrupted[0]), step="best")
  accuracies = eval_accuracies(uninterrupted[1])
  assert len(accuracies) >= 2
  # The highest accuracy; of a tie, the later step.
  assert best.step == max(accuracies, key=lambda step: (accuracies[step], step))


@pytest.mark.parametrize("images,message", [
    (np.zeros((3, 32, 32), np.float32), r"shape \[N, 32, 32, 3\]"),
    (np.zeros((2, 28, 28, 3), np.float32), r"shape \[N, 32, 32, 3\]"),
    (np.zeros((2, 32, 32, 3), np.uint8), "float images"),
    (np.full((2, 32, 32, 3), 255.0, np.float32), r"in \[0, 1\]"),
])
def test_load_classifier_rejects_bad_images(uninterrupted, images, message):
  classifier = odgq_jax.load_classifier(str(uninterrupted[0]))
  with pytest.raises(ValueError, match=message):
    classifier.logits(images)


def test_load_classifier_errors_name_the_problem(uninterrupted, tmp_path):
  with pytest.raises(ValueError, match="is not a directory"):
    odgq_jax.load_classifier(str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="no config.json"):
    odgq_jax.load_classifier(str(tmp_path))
  workdir = tmp_path / "no_checkpoints"
  workdir.mkdir()
  for name in ("config.json", "dataset_info.json"):
    (workdir / name).write_text((uninterrupted[0] / name).read_text())
  with pytest.raises(ValueError, match="no checkpoints"):
    odgq_jax.load_classifier(str(workdir))
  with pytest.raises(ValueError, match="no checkpoint for step 3"):
    odgq_jax.load_classifier(str(uninterrupted[0]), step=3)


def test_eval_end_to_end_on_the_smoke_checkpoint(uninterrupted, tmp_path):
  workdir = str(uninterrupted[0])
  output = tmp_path / "eval" / "report.json"
  proc = subprocess.run(
      [sys.executable, str(REPO / "launch" / "eval.py"), "--checkpoint", workdir,
       "--substitute", f"fp={workdir}", "--substitute", f"low_bit={workdir}",
       "--split", "test[5:]", "--num_examples", "16", "--batch_size", "16",
       "--output", str(output)],
      cwd=REPO, capture_output=True, text=True, timeout=900, env=launch_environment())
  assert proc.returncode == 0, proc.stdout + proc.stderr
  report = json.loads(output.read_text())
  assert report["protocol"] == "quick" and report["num_examples"] == 16
  assert report["split"] == "test[5:]"
  assert report["attacks"]["transfer_low_bit"] is not None
  assert report["attacks"]["transfer_arch"] is None  # no substitute given
  assert report["verdict"] in ("passed", "masked")
  assert (output.parent / "report.md").is_file() and (output.parent / "robust_vs_eps.png").is_file()
  assert "[square] batch 1/1" in proc.stderr  # progress with ETA
  assert "ETA" in proc.stderr


def test_eval_rejects_a_bad_substitute_spec(uninterrupted):
  proc = subprocess.run(
      [sys.executable, str(REPO / "launch" / "eval.py"), "--checkpoint", str(uninterrupted[0]),
       "--substitute", "resnet=/nowhere"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "--substitute must be NAME=DIR" in proc.stderr


def test_eval_rejects_an_unknown_attack_name(tmp_path):
  # Checked when the flags are parsed, before any checkpoint is read.
  proc = subprocess.run(
      [sys.executable, str(REPO / "launch" / "eval.py"), "--checkpoint", str(tmp_path),
       "--attacks", "pgd20,pgd21"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "--attacks must be names from" in proc.stderr
