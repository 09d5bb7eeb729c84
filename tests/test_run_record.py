"""The run record `run.json` that `train_and_evaluate` keeps in the workdir, across a resume."""
import json
import shutil

import pytest

from odgq_jax import run_record
from odgq_jax import train
from tests import test_input_pipeline
from tests import test_train

STEPS_PER_EPOCH = 4  # train[:128] at batch 32


def short_run_config():
  """tests/test_train.py's tiny W4A4 model, 2 epochs of 4 steps, an evaluation after each."""
  config = test_train.tiny_config()
  config.train_split, config.eval_split = "train[:128]", "test[:64]"
  config.shuffle_buffer, config.batch_size, config.eval_batch_size = 128, 32, 64
  config.num_epochs, config.log_every_steps, config.checkpoint_every_steps = 2, 2, 100
  config.keep_checkpoints = 2
  return config


def read_record(workdir):
  with open(workdir / run_record.RUN_RECORD_FILE) as f:
    return json.load(f)


@test_input_pipeline.requires_offline_cifar10
def test_a_run_writes_its_record_and_a_resume_keeps_the_earlier_evaluations(tmp_path):
  config = short_run_config()
  train.train_and_evaluate(config, str(tmp_path))
  first = read_record(tmp_path)
  assert not (tmp_path / f"{run_record.RUN_RECORD_FILE}.tmp").exists()
  assert first["config"]["model"]["name"] == "tiny" and first["config"]["num_epochs"] == 2
  assert [(e["step"], e["epoch"]) for e in first["evals"]] == [(4, 1.0), (8, 2.0)]
  assert all(0 <= e["accuracy"] <= 1 and e["loss"] > 0 for e in first["evals"])
  assert first["updates"] == 8 and len(first["segments"]) == 1
  assert first["wall_seconds"] > 0 and first["wall_seconds"] == first["segments"][0]["wall_seconds"]
  # Timed intervals leave out the first step (compilation): steps 2..8 of 8.
  assert first["timed_updates"] == 7 and 0 < first["seconds_per_update"] < first["wall_seconds"]
  assert first["machine"]["jax_backend"] == "cpu" and first["machine"]["device_count"] == 4
  assert first["machine"]["cpu_count"] >= 1
  assert set(first["versions"]) == set(run_record.PACKAGES) | {"python"}
  assert first["versions"]["jax"] and first["versions"]["tensorflow"]

  # Interrupted after the first evaluation: only its checkpoint (step 4) is left.
  shutil.rmtree(tmp_path / "checkpoints" / "8")
  train.train_and_evaluate(config, str(tmp_path))
  resumed = read_record(tmp_path)
  assert [e["step"] for e in resumed["evals"]] == [4, 8]  # step 8 computed again, not twice
  assert resumed["evals"][0] == first["evals"][0]
  assert [(s["start_step"], s["end_step"]) for s in resumed["segments"]] == [(0, 8), (4, 8)]
  assert resumed["wall_seconds"] == pytest.approx(
      first["wall_seconds"] + resumed["segments"][1]["wall_seconds"])
  assert resumed["timed_updates"] == 7 + 3  # the resumed segment times steps 6..8


def test_a_record_that_is_not_json_is_an_error_naming_the_file(tmp_path):
  (tmp_path / run_record.RUN_RECORD_FILE).write_text("{not json")
  with pytest.raises(ValueError, match="run.json is not valid JSON"):
    run_record.RunRecord(str(tmp_path), short_run_config(), 0, STEPS_PER_EPOCH, started=0.0)


def test_resuming_drops_evaluations_after_the_resumed_step(tmp_path):
  config = short_run_config()
  record = run_record.RunRecord(str(tmp_path), config, 0, STEPS_PER_EPOCH, started=0.0)
  for step in (4, 8, 12):
    record.add_eval(step, {"loss": 1.0, "accuracy": 0.5})
  record.write(12)
  resumed = run_record.RunRecord(str(tmp_path), config, 8, STEPS_PER_EPOCH, started=0.0)
  assert [e["step"] for e in resumed.evals] == [4, 8]
