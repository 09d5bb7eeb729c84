"""Compiled FLOPs, wall time and memory of one train step of each training method, side by side.

  python benchmarks/step_cost.py --output results/benchmarks/step_cost.json
  python benchmarks/step_cost.py --methods natural,odgq --steps 3 --batch_size 32  # quick check

Every method trains ResNet-20 W4A4 with its config (`configs/cifar10_resnet20_w4a4_<name>.py`,
`configs/cifar10_resnet20_w4a4.py` for natural; PGD-AT with PGD-10; DWQ drawing 4 to 8 bits) at
the same global batch, on one synthetic in-memory CIFAR-10-shaped batch, through the jitted train
step that `odgq_jax.train.compile_steps` builds (state donated). A method without a registered
implementation is skipped with a note. Per method:

- flops: compiled FLOPs of one minibatch step. DWQ's step is a `lax.switch` over its precisions, of
  which one runs: the FLOPs of its most expensive branch are what XLA reports for a conditional
  (all branches cost the same, bits do not change simulated-quantization FLOPs). XLA's cost
  analysis (`Compiled.cost_analysis()`) counts a loop's body once whatever its trip count, so a
  PGD-10 attack under `lax.fori_loop` would count as a single PGD step. For every `scan` loop in
  the step's jaxpr (a `fori_loop` with static bounds is one; nested and unrolled loops included)
  the iterations XLA leaves out are added, at the cost of XLA's analysis of the loop body
  compiled on its own (see `uncounted_loop_flops`). `xla_flops` is the uncorrected figure.
- flops_per_update = flops / updates_per_batch. A replaying method (Free-AT, ODG-Q) makes m
  optimizer updates per minibatch and reads 1/m as many minibatches in a run of the same number of
  epochs (of updates), so a run costs (cost per update) x (updates) for every method: the ratios
  compare costs per update.
- step_seconds: median wall time of a step over --steps steps, after 2 warm-up steps; the methods
  take turns step by step, so that other load on the machine affects them alike.
  seconds_per_update = step_seconds / updates_per_batch.
- flops_ratio, wall_ratio: cost per update relative to natural training's (natural is always
  measured).
- peak_memory_bytes: XLA's buffer-assignment estimate of the device memory a step needs
  (`Compiled.memory_analysis()`): arguments + outputs + temporaries - aliased bytes (the donated
  state's buffers reused for the new state). It excludes the compiled code and anything outside
  the step (e.g. prefetched batches).

Writes {"methods": {name: {...}}, "skipped": {name: reason}, "machine": {...}} to --output and
prints a markdown table.
"""
import importlib
import importlib.util
import json
import os
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np

from measure import machine_info, peak_memory_bytes, uncounted_loop_flops, xla_flops
from odgq_jax import logs
from odgq_jax import methods
from odgq_jax import models
from odgq_jax import parallel
from odgq_jax import train

ALL_METHODS = ("natural", "pgd_at", "fgsm_rs", "n_fgsm", "free_at", "trades", "dq", "odgq", "dwq")
METHOD_OPTIONS = {"pgd_at": {"attack_steps": 10}}
REFERENCE_METHOD = "natural"
WARMUP_STEPS = 2
CIFAR10_TRAIN_EXAMPLES = 50_000  # sets the learning-rate schedule's length only
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)

flags.DEFINE_string("output", "", "Write the results as JSON to this path.")
flags.DEFINE_list("methods", list(ALL_METHODS),
                  "Training methods to measure, each by the suffix of its config "
                  "(configs/cifar10_resnet20_w4a4_<name>.py), e.g. odgq or odgq_equal_time.")
flags.DEFINE_integer("steps", 10, "Timed steps per method (after the warm-up steps).")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
FLAGS = flags.FLAGS


def config_module(name: str) -> str:
  """The config module of ResNet-20 W4A4 trained as `name` (natural: natural QAT's)."""
  return "configs.cifar10_resnet20_w4a4" + ("" if name == REFERENCE_METHOD else f"_{name}")


def method_run_config(name: str):
  """The config of ResNet-20 W4A4 trained as `name` (its configs/ file)."""
  config = importlib.import_module(config_module(name)).get_config()
  config.method.update(METHOD_OPTIONS.get(name, {}))
  return config


class MethodBenchmark:
  """One method's train state, compiled step and measurements."""

  def __init__(self, name: str, batch: dict[str, jax.Array], mesh: jax.sharding.Mesh):
    config = method_run_config(name)
    config.batch_size = FLAGS.batch_size
    self.name = name
    self.method = methods.create_method_for_run(config)
    learning_rate_fn = train.create_learning_rate_fn(
        config, CIFAR10_TRAIN_EXAMPLES // config.batch_size)
    model = models.create_model_from_config(config.model, NUM_CLASSES)
    self.batch = batch
    method_state = self.method.init_method_state(
        batch["image"].shape, num_classes=NUM_CLASSES, num_train_examples=CIFAR10_TRAIN_EXAMPLES)
    self.state = train.create_train_state(
        jax.random.PRNGKey(config.seed), model,
        train.create_optimizer(config, learning_rate_fn), batch["image"], mesh, method_state,
        self.method.method_state_sharding(method_state, mesh))
    jitted, _ = train.compile_steps(mesh, self.method, learning_rate_fn)
    start = time.perf_counter()
    traced = jitted.trace(self.state, batch)
    self.compiled = traced.lower().compile()
    self.xla_flops = xla_flops(self.compiled)
    self.flops = self.xla_flops + uncounted_loop_flops(traced.jaxpr.jaxpr)
    self.compile_seconds = time.perf_counter() - start
    self.step_seconds = []

  def step(self) -> float:
    """Runs one train step; returns its wall time in seconds."""
    start = time.perf_counter()
    self.state, _ = self.compiled(self.state, self.batch)
    jax.block_until_ready(self.state)
    return time.perf_counter() - start

  def result(self) -> dict[str, float | int | None]:
    updates = self.method.updates_per_batch
    seconds = statistics.median(self.step_seconds)
    return {"flops": self.flops, "flops_per_update": self.flops / updates,
            "xla_flops": self.xla_flops, "step_seconds": seconds,
            "seconds_per_update": seconds / updates,
            "peak_memory_bytes": peak_memory_bytes(self.compiled), "updates_per_batch": updates,
            "compile_seconds": self.compile_seconds}


def synthetic_batch(batch_size: int, mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """A CIFAR-10-shaped training batch, with the example indices and crop geometry that the input
  pipeline yields (ODG-Q's memory domain reads them)."""
  rng = np.random.default_rng(0)
  return parallel.make_global_batch({
      "image": rng.uniform(0, 1, (batch_size, *IMAGE_SHAPE)).astype(np.float32),
      "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32),
      "index": rng.choice(CIFAR10_TRAIN_EXAMPLES, batch_size, replace=False).astype(np.int32),
      "crop_offset": rng.integers(0, 9, (batch_size, 2)).astype(np.int32),
      "flip": rng.integers(0, 2, batch_size).astype(bool)}, mesh)


def markdown_table(results: dict[str, dict[str, float | int | None]]) -> str:
  lines = ["| method | updates/step | GFLOPs/step | GFLOPs/update | FLOPs ratio | s/step | "
           "s/update | wall ratio | peak memory (MiB) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for name, r in results.items():
    memory = ("n/a" if r["peak_memory_bytes"] is None
              else f"{r['peak_memory_bytes'] / 2 ** 20:.0f}")
    lines.append(
        f"| {name} | {r['updates_per_batch']} | {r['flops'] / 1e9:.1f} | "
        f"{r['flops_per_update'] / 1e9:.1f} | {r['flops_ratio']:.2f} | {r['step_seconds']:.2f} | "
        f"{r['seconds_per_update']:.2f} | {r['wall_ratio']:.2f} | {memory} |")
  return "\n".join(lines)


def main(argv):
  del argv
  logs.quiet_library_logs()
  machine = machine_info()
  names = list(dict.fromkeys([REFERENCE_METHOD, *FLAGS.methods]))
  skipped = {name: f"no config {config_module(name)}" for name in names
             if importlib.util.find_spec(config_module(name)) is None}
  for name, reason in skipped.items():
    print(f"Skipping {name}: {reason}.")
  mesh = parallel.create_mesh()
  parallel.check_batch_divides(FLAGS.batch_size, mesh)
  batch = synthetic_batch(FLAGS.batch_size, mesh)
  benchmarks = []
  for name in names:
    if name not in skipped:
      benchmarks.append(MethodBenchmark(name, batch, mesh))
      print(f"{name}: compiled in {benchmarks[-1].compile_seconds:.0f} s", flush=True)
  for benchmark in benchmarks:
    for _ in range(WARMUP_STEPS):
      benchmark.step()
  for _ in range(FLAGS.steps):
    for benchmark in benchmarks:
      benchmark.step_seconds.append(benchmark.step())

  results = {benchmark.name: benchmark.result() for benchmark in benchmarks}
  reference = results[REFERENCE_METHOD]
  for r in results.values():
    r["flops_ratio"] = r["flops_per_update"] / reference["flops_per_update"]
    r["wall_ratio"] = r["seconds_per_update"] / reference["seconds_per_update"]
  machine["load_average_at_end"] = os.getloadavg()
  report = {"methods": results, "skipped": skipped, "machine": machine,
            "settings": {"model": "resnet20 W4A4", "batch_size": FLAGS.batch_size,
                         "timed_steps": FLAGS.steps, "warmup_steps": WARMUP_STEPS,
                         "method_options": METHOD_OPTIONS}}
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(report, f, indent=2)
  print(markdown_table(results))


if __name__ == "__main__":
  app.run(main)
