"""Throughput and compiled FLOPs per image of the ImageNet configs' natural and ODG-Q train steps.

  python benchmarks/throughput.py --output results/benchmarks/throughput_gpu.json
  python benchmarks/throughput.py --fake_cpu_devices 4 --fast_compile --image_size 64 --batch_size 4 --steps 3 --output results/benchmarks/throughput_cpu.json

(from the repository root, with the package installed or PYTHONPATH=. on a machine without it).

For each config of --configs (configs/<name>.py) and each variant (`odgq`, and the config's
`natural` variant, `--config configs/<name>.py:natural`), the train step that
`odgq_jax.train.compile_steps` builds runs on one synthetic batch (uniform pixels, random labels)
resident on the devices, so the input pipeline costs nothing. Nothing here reads a dataset: the
script imports jax, flax, optax, orbax-checkpoint, chex, ml_collections, clu and absl, never
tensorflow or tensorflow-datasets, and runs on a machine that has only those.

Per config and variant:
- flops_per_image: compiled FLOPs of one step (XLA's cost analysis, with the loop iterations it
  leaves out added: `measure.uncounted_loop_flops`) over all devices, divided by the global batch
  and by the updates per minibatch (ODG-Q replays each minibatch m = 4 times): FLOPs per image per
  optimizer update, what a run of `num_epochs` epochs of updates spends on each training image in
  each epoch. Counted for the step at --flops_image_size and --flops_batch_size (default: the
  config's 224x224 and global batch, for which a run's per-step work on the replicated parameters
  (quantizing the kernels, the optimizer) is a negligible share per image), compiled for abstract
  inputs: nothing is allocated or run. The count is XLA's for the backend that compiles: on the
  CPU the conv gradients are `odgq_jax/models/conv.py`'s matrix-product form and a bfloat16 step
  counts the conversions to and from float32 that XLA:CPU inserts, so an accelerator's count
  differs.
- images_per_second_per_device: global batch x updates per minibatch / step seconds / devices,
  the step seconds being the median over --steps timed steps after WARMUP_STEPS, at --image_size
  (default: the config's) and --batch_size (default: the config's).
- odgq_to_natural_flops: ODG-Q's flops_per_image over natural training's, checked against
  MAX_ODGQ_TO_NATURAL_FLOPS (`within_max_ratio`).
- run: the whole run's FLOPs, flops_per_image x IMAGENET_TRAIN_EXAMPLES x num_epochs, and the hours
  it would take on 8 V100s at the FLOP rate that the flax ImageNet example reached with ResNet-50
  (REFERENCE: its images/s per GPU times this benchmark's FLOPs per image of the natural ResNet-50
  W4A4 step, when imagenet_resnet50_w4a4_odgq is measured at 224x224): an estimate that assumes
  the same achieved FLOP rate, not a measurement.

The script exits with status 1 if a config's ODG-Q step costs more than MAX_ODGQ_TO_NATURAL_FLOPS
times natural training's per image.
"""
import importlib
import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from measure import machine_info, uncounted_loop_flops, xla_flops
from odgq_jax import logs
from odgq_jax import methods
from odgq_jax import models
from odgq_jax import parallel
from odgq_jax import train

IMAGENET_CONFIGS = ("imagenet_resnet18_w4a4_odgq", "imagenet_birealnet18_odgq",
                    "imagenet_resnet50_w4a4_odgq")
VARIANTS = ("natural", "odgq")
NUM_CLASSES = 1000
# The first call of a compiled step allocates its buffers; later calls reuse them.
WARMUP_STEPS = 1
MAX_ODGQ_TO_NATURAL_FLOPS = 1.4
FLOP_RATE_CONFIG = "imagenet_resnet50_w4a4_odgq"
REFERENCE = {
    "what": "flax ImageNet example, ResNet-50, 8 x NVIDIA V100, mixed precision "
            "(v100_x8_mixed_precision): 62,499 steps of batch 2048 in 5.0 h",
    "source": "https://github.com/google/flax/blob/main/examples/imagenet/README.md",
    "devices": 8, "steps": 62_499, "batch_size": 2048, "wall_hours": 5.0,
}
REFERENCE["images_per_second_per_device"] = (
    REFERENCE["steps"] * REFERENCE["batch_size"]
    / (REFERENCE["wall_hours"] * 3600) / REFERENCE["devices"])

flags.DEFINE_list("configs", list(IMAGENET_CONFIGS), "Config modules under configs/ to measure.")
flags.DEFINE_integer("image_size", None, "Side of the timed images (default: the config's).")
flags.DEFINE_integer("flops_image_size", None, "Side of the images whose FLOPs are counted "
                     "(default: the config's).")
flags.DEFINE_integer("batch_size", None, "Global batch of the timed steps (default: the config's).")
flags.DEFINE_integer("flops_batch_size", None, "Global batch of the step whose FLOPs are counted "
                     "(default: the config's).")
flags.DEFINE_integer("steps", 5, "Timed steps per config and variant (0: FLOPs only).")
flags.DEFINE_enum("compute_dtype", None, list(models.COMPUTE_DTYPES),
                  "Compute dtype (default: the config's).")
flags.DEFINE_integer("fake_cpu_devices", None, "Run on this many fake CPU devices (a CPU machine).")
flags.DEFINE_bool("fast_compile", False,
                  "Compile with XLA's optimizations off (jax_disable_most_optimizations): several "
                  "times faster to compile, the same operations counted, slower steps.")
flags.DEFINE_string("output", "", "Write the results as JSON to this path.")
FLAGS = flags.FLAGS


class VariantBenchmark:
  """One config variant's model, method and optimizer on the mesh, and what is measured of them."""

  def __init__(self, config_name: str, variant: str, mesh: jax.sharding.Mesh):
    config = importlib.import_module(f"configs.{config_name}").get_config(variant)
    if FLAGS.compute_dtype:
      config.compute_dtype = FLAGS.compute_dtype
    self.config, self.mesh = config, mesh
    self.method = methods.create_method_for_run(config)
    self.model = models.create_model_for_run(config, NUM_CLASSES)

  def optimizer(self, batch_size: int):
    learning_rate_fn = train.create_learning_rate_fn(
        self.config, default.IMAGENET_TRAIN_EXAMPLES // batch_size)
    return train.create_optimizer(self.config, learning_rate_fn), learning_rate_fn

  def method_state(self, image_shape: tuple[int, ...]):
    method_state = self.method.init_method_state(
        image_shape, num_classes=NUM_CLASSES,
        num_train_examples=default.IMAGENET_TRAIN_EXAMPLES)
    return method_state, self.method.method_state_sharding(method_state, self.mesh)

  def compile(self, state, batch, learning_rate_fn):
    """The compiled train step for (state, batch), concrete or abstract; its FLOPs per image over
    all devices (module doc) and its compilation's seconds."""
    jitted, _ = train.compile_steps(self.mesh, self.method, learning_rate_fn)
    start = time.perf_counter()
    traced = jitted.trace(state, batch)
    compiled = traced.lower().compile()
    compile_seconds = time.perf_counter() - start
    # XLA analyses the program of one device, which sees 1/n of the batch.
    flops = xla_flops(compiled) + uncounted_loop_flops(traced.jaxpr.jaxpr)
    batch_size = batch["image"].shape[0]
    flops_per_image = flops * self.mesh.size / (batch_size * self.method.updates_per_batch)
    return compiled, flops_per_image, compile_seconds

  def flops_per_image(self, image_size: int, batch_size: int) -> float:
    """FLOPs per image of the step compiled for abstract inputs (nothing is allocated or run)."""
    image_shape = (image_size, image_size, 3)
    tx, learning_rate_fn = self.optimizer(batch_size)
    state = train.abstract_train_state(self.model, tx, image_shape, self.mesh,
                                       *self.method_state((batch_size, *image_shape)))
    batch_sharding = parallel.batch_sharding(self.mesh)
    batch = {"image": jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.float32,
                                           sharding=batch_sharding),
             "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=batch_sharding)}
    return self.compile(state, batch, learning_rate_fn)[1]

  def timed(self, image_size: int, batch_size: int, steps: int) -> dict[str, float]:
    """The median wall seconds of `steps` train steps (after WARMUP_STEPS) on a synthetic batch,
    the compilation's seconds and the step's FLOPs per image."""
    rng = np.random.default_rng(0)
    batch = parallel.make_global_batch({
        "image": rng.uniform(0, 1, (batch_size, image_size, image_size, 3)).astype(np.float32),
        "label": rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)}, self.mesh)
    tx, learning_rate_fn = self.optimizer(batch_size)
    state = train.create_train_state(jax.random.PRNGKey(0), self.model, tx, batch["image"],
                                     self.mesh, *self.method_state(batch["image"].shape))
    compiled, flops_per_image, compile_seconds = self.compile(state, batch, learning_rate_fn)
    seconds = []
    for i in range(WARMUP_STEPS + steps):
      start = time.perf_counter()
      state, _ = compiled(state, batch)
      jax.block_until_ready(state)
      if i >= WARMUP_STEPS:
        seconds.append(time.perf_counter() - start)
    return {"step_seconds": statistics.median(seconds), "compile_seconds": compile_seconds,
            "flops_per_image": flops_per_image}


def measure(config_name: str, mesh: jax.sharding.Mesh) -> dict:
  """Both variants of one config: FLOPs per image, throughput, their ratio and the run's cost."""
  result = {}
  for variant in VARIANTS:
    benchmark = VariantBenchmark(config_name, variant, mesh)
    config = benchmark.config
    image_size = FLAGS.image_size or config.image_size
    flops_image_size = FLAGS.flops_image_size or config.image_size
    batch_size = FLAGS.batch_size or config.batch_size
    flops_batch_size = FLAGS.flops_batch_size or config.batch_size
    parallel.check_batch_divides(batch_size, mesh)
    parallel.check_batch_divides(flops_batch_size, mesh)
    updates = benchmark.method.updates_per_batch
    entry = {"method": config.method.name, "model": config.model.name,
             "compute_dtype": config.compute_dtype, "updates_per_batch": updates,
             "num_epochs": config.num_epochs}
    if FLAGS.steps:
      timing = benchmark.timed(image_size, batch_size, FLAGS.steps)
      entry |= {"image_size": image_size, "batch_size": batch_size, "timed_steps": FLAGS.steps,
                "step_seconds": timing["step_seconds"],
                "compile_seconds": timing["compile_seconds"],
                "images_per_second_per_device":
                    batch_size * updates / timing["step_seconds"] / mesh.size}
    entry["flops_image_size"], entry["flops_batch_size"] = flops_image_size, flops_batch_size
    same_step = (image_size, batch_size) == (flops_image_size, flops_batch_size)
    entry["flops_per_image"] = (timing["flops_per_image"] if FLAGS.steps and same_step
                                else benchmark.flops_per_image(flops_image_size, flops_batch_size))
    entry["run_flops"] = (entry["flops_per_image"] * default.IMAGENET_TRAIN_EXAMPLES
                          * config.num_epochs)
    result[variant] = entry
    print(f"{config_name}:{variant}: {entry['flops_per_image'] / 1e9:.2f} GFLOPs per image at "
          f"{flops_image_size}x{flops_image_size}"
          + (f", {entry['images_per_second_per_device']:.3g} images/s per device at "
             f"{image_size}x{image_size}" if FLAGS.steps else ""), flush=True)
  ratio = result["odgq"]["flops_per_image"] / result["natural"]["flops_per_image"]
  result["odgq_to_natural_flops"] = ratio
  result["within_max_ratio"] = ratio <= MAX_ODGQ_TO_NATURAL_FLOPS
  return result


def add_hours_at_reference_rate(results: dict) -> float | None:
  """Adds `hours_on_8_v100_at_flax_rate` to every variant (module doc); returns the FLOP rate per
  device it assumes, or None where the natural ResNet-50 step was not counted at 224x224."""
  reference = results.get(FLOP_RATE_CONFIG, {}).get("natural")
  if reference is None or reference["flops_image_size"] != 224:
    return None
  flops_per_second = REFERENCE["images_per_second_per_device"] * reference["flops_per_image"]
  for result in results.values():
    for variant in VARIANTS:
      result[variant]["hours_on_8_v100_at_flax_rate"] = (
          result[variant]["run_flops"] / (REFERENCE["devices"] * flops_per_second) / 3600)
  return flops_per_second


def markdown_table(results: dict) -> str:
  lines = ["| config | variant | GFLOPs/image | ODG-Q/natural | images/s/device | run EFLOPs | "
           "h on 8 V100 (est.) |", "|---|---|---:|---:|---:|---:|---:|"]
  for name, result in results.items():
    for variant in VARIANTS:
      r = result[variant]
      throughput = r.get("images_per_second_per_device")
      hours = r.get("hours_on_8_v100_at_flax_rate")
      lines.append(
          f"| {name} | {variant} | {r['flops_per_image'] / 1e9:.2f} | "
          f"{result['odgq_to_natural_flops']:.3f} | "
          f"{'-' if throughput is None else f'{throughput:.3g}'} | {r['run_flops'] / 1e18:.1f} | "
          f"{'-' if hours is None else f'{hours:.1f}'} |")
  return "\n".join(lines)


def main(argv):
  del argv
  logs.quiet_library_logs()
  if FLAGS.fake_cpu_devices:
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", FLAGS.fake_cpu_devices)
  if FLAGS.fast_compile:
    jax.config.update("jax_disable_most_optimizations", True)
  mesh = parallel.create_mesh()
  machine = machine_info()
  results = {name: measure(name, mesh) for name in FLAGS.configs}
  flops_per_second = add_hours_at_reference_rate(results)
  machine["load_average_at_end"] = os.getloadavg()
  report = {
      "configs": results,
      "max_odgq_to_natural_flops": MAX_ODGQ_TO_NATURAL_FLOPS,
      "reference": REFERENCE | {"flops_per_second_per_device": flops_per_second},
      "settings": {"devices": mesh.size, "backend": jax.default_backend(),
                   "image_size": FLAGS.image_size, "flops_image_size": FLAGS.flops_image_size,
                   "batch_size": FLAGS.batch_size, "flops_batch_size": FLAGS.flops_batch_size,
                   "timed_steps": FLAGS.steps,
                   "warmup_steps": WARMUP_STEPS, "compute_dtype": FLAGS.compute_dtype,
                   "fake_cpu_devices": FLAGS.fake_cpu_devices,
                   "xla_optimizations": not FLAGS.fast_compile, "command": " ".join(sys.argv)},
      "machine": machine,
  }
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(report, f, indent=2)
  print(markdown_table(results))
  over = [name for name, result in results.items() if not result["within_max_ratio"]]
  if over:
    print(f"ODG-Q costs more than {MAX_ODGQ_TO_NATURAL_FLOPS}x natural training per image: {over}")
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
