"""Compiled FLOPs, wall time and memory of one train step of each training method, side by side.

  python benchmarks/step_cost.py --output step_cost.json
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
import json
import os
import platform
import statistics
import time

from absl import app
from absl import flags
import jax
from jax.extend import core as jax_core
import jaxlib
import numpy as np

from odgq_jax import logs
from odgq_jax import methods
from odgq_jax import models
from odgq_jax import parallel
from odgq_jax import train

ALL_METHODS = ("natural", "pgd_at", "fgsm_rs", "free_at", "trades", "dq", "odgq", "dwq")
METHOD_OPTIONS = {"pgd_at": {"attack_steps": 10}}
REFERENCE_METHOD = "natural"
WARMUP_STEPS = 2
CIFAR10_TRAIN_EXAMPLES = 50_000  # sets the learning-rate schedule's length only
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)

flags.DEFINE_string("output", "", "Write the results as JSON to this path.")
flags.DEFINE_list("methods", list(ALL_METHODS), "Training methods to measure.")
flags.DEFINE_integer("steps", 10, "Timed steps per method (after the warm-up steps).")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
FLAGS = flags.FLAGS


def xla_flops(compiled: jax.stages.Compiled) -> float:
  """FLOPs of XLA's cost analysis, summed over its entries (one per compiled module)."""
  analysis = compiled.cost_analysis()
  entries = analysis if isinstance(analysis, (list, tuple)) else [analysis]
  return float(sum(entry.get("flops", 0.0) for entry in entries))


def uncounted_loop_flops(jaxpr: jax_core.Jaxpr) -> float:
  """FLOPs of the loop iterations that XLA's cost analysis of `jaxpr` leaves out.

  XLA counts a loop body once. A scan of n iterations unrolled by k is a loop whose body holds k
  copies, followed by n mod k copies; XLA counts c = k + n mod k copies (c = n when k >= n: no
  loop is left). With b the FLOPs of one copy by XLA's count and u those its own loops leave out,
  the truth is n (b + u) against XLA's c b: this returns the sum over the loops of
  n u + (n - c) b, looking into every sub-jaxpr (calls, branches, custom rules).

  Raises:
    ValueError: for a `while` loop, whose trip count is not known at compile time.
  """
  missing = 0.0
  for equation in jaxpr.eqns:
    if equation.primitive.name == "while":
      raise ValueError("the step has a while loop with a dynamic trip count; its FLOPs cannot be "
                       "counted (a fori_loop with static bounds is a scan and can)")
    if equation.primitive.name == "scan":
      body = equation.params["jaxpr"]
      trips, unroll = equation.params["length"], int(equation.params["unroll"])
      counted = trips if unroll >= trips else unroll + trips % unroll
      avals = [jax.ShapeDtypeStruct(aval.shape, aval.dtype) for aval in body.in_avals]
      body_flops = xla_flops(jax.jit(jax_core.jaxpr_as_fun(body)).lower(*avals).compile())
      missing += trips * uncounted_loop_flops(body.jaxpr) + (trips - counted) * body_flops
    else:
      missing += sum(uncounted_loop_flops(sub) for sub in jax_core.jaxprs_in_params(
          equation.params))
  return missing


def peak_memory_bytes(compiled: jax.stages.Compiled) -> int | None:
  """Arguments + outputs + temporaries - aliased bytes of XLA's buffer assignment (None if n/a)."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
             + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def method_run_config(name: str):
  """The config of ResNet-20 W4A4 trained with method `name` (its configs/ file)."""
  module = "configs.cifar10_resnet20_w4a4" + ("" if name == REFERENCE_METHOD else f"_{name}")
  config = importlib.import_module(module).get_config()
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
    self.state = train.create_train_state(
        jax.random.PRNGKey(config.seed), model,
        train.create_optimizer(config, learning_rate_fn), batch["image"], mesh,
        method_state=self.method.init_method_state(batch["image"].shape))
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
  rng = np.random.default_rng(0)
  return parallel.make_global_batch({
      "image": rng.uniform(0, 1, (batch_size, *IMAGE_SHAPE)).astype(np.float32),
      "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)}, mesh)


def machine_info() -> dict[str, object]:
  return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
          "processor": platform.processor() or platform.machine(),
          "python": platform.python_version(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "backend": jax.default_backend(),
          "devices": [str(device) for device in jax.devices()],
          "load_average_at_start": os.getloadavg()}


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
  skipped = {name: "not registered" for name in names if name not in methods.METHODS}
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
