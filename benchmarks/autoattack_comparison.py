"""Our APGD-CE and Square against AutoAttack's PyTorch reference, on one small CIFAR-10 model.

  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
  PYTHONPATH=/path/to/auto-attack nice -n 10 \
  .venv/bin/python benchmarks/autoattack_comparison.py \
      --output results/benchmarks/autoattack_comparison.json

Prerequisites (neither is a dependency of odgq_jax):
  * PyTorch: `.venv/bin/pip install torch==2.13.0` (the CPU wheel is enough).
  * AutoAttack (github.com/fra31/auto-attack), unpacked outside this repository and made importable
    through PYTHONPATH (it is not installed); pass its commit with --autoattack_commit to record
    it in the results.
  * CIFAR-10 as the TFDS dataset `cifar10_jpeg` in --data_dir.

What it does:
  1. Trains a tiny CNN (conv3x3-16, maxpool, conv3x3-32, maxpool, dense-64, dense-10; inputs in
     [0, 1]) in Flax with Adam on the first --num_train CIFAR-10 training images (a minute or two
     on one CPU core).
  2. Rebuilds the same network in PyTorch from the trained weights (NCHW, as AutoAttack expects) and
     asserts that the logits of both agree (max abs difference < 1e-4) on the evaluation images.
  3. On the first --num_examples CIFAR-10 test images at L-inf radius --eps, runs
       * our APGD-CE (`ATTACKS["apgd_ce"]`, 100 iterations, 1 restart) and AutoAttack's
         `APGDAttack(loss="ce", n_iter=100, n_restarts=1)`;
       * our Square (`ATTACKS["square"]`, 1000 queries, p_init 0.8) and AutoAttack's
         `SquareAttack(n_queries=1000, p_init=0.8, n_restarts=1)` (margin loss, p schedule
         rescaled to n_queries, its default);
     for --num_seeds seeds (our PRNG key and AutoAttack's `seed` both set to the seed).
     Robust accuracy is the fraction of examples classified correctly both clean and at the
     attack's output (AutoAttack returns the clean image for examples misclassified clean; ours
     attack every example). Our per-attack accuracy on the adversarial images alone, which the
     evaluation protocol reports, is recorded too. Our adversarial images are checked to lie in
     the eps-ball and in [0, 1].
  4. Writes the results as JSON to --output and prints a markdown table: clean accuracy, robust
     accuracy of ours and AutoAttack's per attack, and the differences in points (ours - AA).

Wall times are per attack over all examples in one batch, on the CPU; for our attacks the XLA
compilation is timed separately from the run.
"""
import dataclasses
import json
import math
import os
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow as tf
import tensorflow_datasets as tfds
import torch

from configs import default as default_config
from odgq_jax import attacks
from odgq_jax import logs

flags.DEFINE_string("data_dir", default_config.SHARED_DATA_DIR, "TFDS data directory.")
flags.DEFINE_string("dataset", "cifar10_jpeg", "TFDS name of CIFAR-10.")
flags.DEFINE_integer("num_train", 5000, "Training images (the first of the train split).")
flags.DEFINE_integer("train_epochs", 15, "Epochs over the training images.")
flags.DEFINE_integer("train_batch_size", 128, "Training batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("num_examples", 500, "Test images attacked (the first of the test split).")
flags.DEFINE_float("eps", 8 / 255, "L-inf radius.")
flags.DEFINE_integer("apgd_steps", 100, "APGD iterations.")
flags.DEFINE_integer("square_queries", 1000, "Square query budget.")
flags.DEFINE_float("square_p_init", 0.8, "Square initial fraction p_init.")
flags.DEFINE_integer("seed", 0, "Seed of the model initialisation and training order; also the "
                     "first attack seed.")
flags.DEFINE_integer("num_seeds", 1, "Attack seeds seed, seed + 1, ...; accuracies are averaged.")
flags.DEFINE_float("tolerance_points", 1.0, "Agreement threshold in percentage points.")
flags.DEFINE_string("autoattack_commit", "", "AutoAttack commit on PYTHONPATH, for the record.")
flags.DEFINE_string("output", None, "Where to write the JSON results (optional).")
FLAGS = flags.FLAGS

NUM_CLASSES = 10
LOGITS_TOLERANCE = 1e-4
# Slack of the eps-ball check: float32 rounding of images +- eps.
BALL_TOLERANCE = 1e-6


class TinyCNN(nn.Module):
  """conv3x3-16, ReLU, maxpool 2; conv3x3-32, ReLU, maxpool 2; dense-64, ReLU; dense-10 (NHWC)."""

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = images - 0.5
    x = nn.max_pool(nn.relu(nn.Conv(16, (3, 3), padding="SAME", name="conv1")(x)), (2, 2),
                    strides=(2, 2))
    x = nn.max_pool(nn.relu(nn.Conv(32, (3, 3), padding="SAME", name="conv2")(x)), (2, 2),
                    strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(64, name="fc1")(x))
    return nn.Dense(NUM_CLASSES, name="fc2")(x)


class TorchTinyCNN(torch.nn.Module):
  """`TinyCNN` in PyTorch on NCHW images, with the weights of a trained `TinyCNN`."""

  def __init__(self, params):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
    self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
    self.fc1 = torch.nn.Linear(8 * 8 * 32, 64)
    self.fc2 = torch.nn.Linear(64, NUM_CLASSES)
    with torch.no_grad():
      for name in ("conv1", "conv2"):  # Flax HWIO -> PyTorch OIHW.
        getattr(self, name).weight.copy_(
            torch.from_numpy(np.asarray(params[name]["kernel"]).transpose(3, 2, 0, 1).copy()))
        getattr(self, name).bias.copy_(torch.from_numpy(np.array(params[name]["bias"])))
      for name in ("fc1", "fc2"):  # Flax [in, out] -> PyTorch [out, in].
        getattr(self, name).weight.copy_(
            torch.from_numpy(np.asarray(params[name]["kernel"]).T.copy()))
        getattr(self, name).bias.copy_(torch.from_numpy(np.array(params[name]["bias"])))

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    pool = torch.nn.functional.max_pool2d
    x = images - 0.5
    x = pool(torch.relu(self.conv1(x)), 2)
    x = pool(torch.relu(self.conv2(x)), 2)
    x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # Flatten in Flax's (H, W, C) order.
    return self.fc2(torch.relu(self.fc1(x)))


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
  """Images float32 [N, 32, 32, 3] in [0, 1] and int32 labels [N] of a TFDS split spec."""
  data = tfds.as_numpy(tfds.load(FLAGS.dataset, data_dir=FLAGS.data_dir, split=split,
                                 batch_size=-1))
  return data["image"].astype(np.float32) / 255.0, data["label"].astype(np.int32)


def train(images: np.ndarray, labels: np.ndarray) -> tuple[dict, list[float]]:
  """Trains `TinyCNN` with Adam on (images, labels); returns its params and the epoch losses."""
  model = TinyCNN()
  init_key, shuffle_seed = jax.random.PRNGKey(FLAGS.seed), FLAGS.seed
  params = model.init(init_key, jnp.zeros((1, 32, 32, 3)))["params"]
  optimizer = optax.adam(FLAGS.learning_rate)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss_fn(p):
      return jnp.mean(attacks.cross_entropy(model.apply({"params": p}, x), y))
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(shuffle_seed)
  batch = FLAGS.train_batch_size
  epoch_losses = []
  for _ in range(FLAGS.train_epochs):
    order = rng.permutation(len(images))
    losses = []
    for lo in range(0, len(order) - batch + 1, batch):  # Full batches only: one compilation.
      index = order[lo:lo + batch]
      params, opt_state, loss = step(params, opt_state, images[index], labels[index])
      losses.append(float(loss))
    epoch_losses.append(float(np.mean(losses)))
  return params, epoch_losses


def check_in_ball(adv: np.ndarray, images: np.ndarray, eps: float) -> dict:
  """Max L-inf distance to the images, pixel range, and whether adv is in the eps-ball and box."""
  linf = float(np.max(np.abs(adv.astype(np.float64) - images.astype(np.float64))))
  low, high = float(adv.min()), float(adv.max())
  return {"max_linf": linf, "max_linf_in_eps": linf / eps, "min_pixel": low, "max_pixel": high,
          "finite": bool(np.all(np.isfinite(adv))),
          "passed": bool(linf <= eps + BALL_TOLERANCE and low >= 0.0 and high <= 1.0
                         and np.all(np.isfinite(adv)))}


def run_ours(attack, settings, logits_fn, images, labels, seed):
  """Runs one of our attacks jitted; returns the adversarial images and (compile, run) seconds."""
  fn = jax.jit(lambda x, y, k: attack(logits_fn, x, y, k, settings))
  x, y, key = jnp.asarray(images), jnp.asarray(labels), jax.random.PRNGKey(seed)
  start = time.perf_counter()
  compiled = fn.lower(x, y, key).compile()
  compile_seconds = time.perf_counter() - start
  start = time.perf_counter()
  adv = np.asarray(jax.block_until_ready(compiled(x, y, key)))
  return adv, compile_seconds, time.perf_counter() - start


def run_autoattack(attack, images_nchw):
  """Runs an AutoAttack attack object's `perturb`; returns the adversarial images and seconds."""
  start = time.perf_counter()
  adv = attack.perturb(images_nchw[0], images_nchw[1])
  return adv.detach().numpy().transpose(0, 2, 3, 1), time.perf_counter() - start


def main(argv):
  del argv
  logs.quiet_library_logs()
  # Keep to one core of a shared machine.
  torch.set_num_threads(1)
  torch.set_num_interop_threads(1)
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  tf.config.set_visible_devices([], "GPU")
  from autoattack.autopgd_base import APGDAttack  # pylint: disable=g-import-not-at-top
  from autoattack.square import SquareAttack  # pylint: disable=g-import-not-at-top

  results = {"machine": {"cpu_count": os.cpu_count(), "jax": jax.__version__,
                         "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                         "xla_flags": os.environ.get("XLA_FLAGS", "")},
             "autoattack_commit": FLAGS.autoattack_commit,
             "flags": {name: FLAGS[name].value for name in (
                 "dataset", "num_train", "train_epochs", "train_batch_size", "learning_rate",
                 "num_examples", "eps", "apgd_steps", "square_queries", "square_p_init", "seed",
                 "num_seeds")}}

  # 1. The model.
  start = time.perf_counter()
  train_images, train_labels = load_split(f"train[:{FLAGS.num_train}]")
  images, labels = load_split(f"test[:{FLAGS.num_examples}]")
  params, epoch_losses = train(train_images, train_labels)
  train_seconds = time.perf_counter() - start
  model = TinyCNN()
  logits_fn = lambda x: model.apply({"params": params}, x)
  logits = np.asarray(jax.jit(logits_fn)(images))
  clean_correct = logits.argmax(1) == labels
  train_accuracy = float(np.mean(
      np.asarray(jax.jit(logits_fn)(train_images)).argmax(1) == train_labels))
  results["model"] = {
      "architecture": "TinyCNN: conv3x3-16, ReLU, maxpool2, conv3x3-32, ReLU, maxpool2, "
                      "dense-64, ReLU, dense-10 (inputs in [0, 1], minus 0.5)",
      "num_parameters": int(sum(p.size for p in jax.tree_util.tree_leaves(params))),
      "train_images": FLAGS.num_train, "epoch_losses": epoch_losses,
      "train_accuracy": train_accuracy, "train_seconds_with_data_loading": train_seconds}
  print(f"trained in {train_seconds:.0f}s: train accuracy {train_accuracy:.3f}, "
        f"test accuracy (first {FLAGS.num_examples}) {clean_correct.mean():.3f}", flush=True)

  # 2. The same model in PyTorch.
  torch_model = TorchTinyCNN(params).eval()
  for p in torch_model.parameters():
    p.requires_grad_(False)
  x_torch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  y_torch = torch.from_numpy(labels.astype(np.int64))
  with torch.no_grad():
    torch_logits = torch_model(x_torch).numpy()
  logits_diff = float(np.max(np.abs(torch_logits - logits)))
  assert logits_diff < LOGITS_TOLERANCE, f"JAX and PyTorch logits differ by {logits_diff}"
  assert np.array_equal(torch_logits.argmax(1), logits.argmax(1))
  results["model"]["max_abs_logits_diff_jax_torch"] = logits_diff
  results["clean_accuracy"] = float(clean_correct.mean())
  print(f"JAX vs PyTorch logits: max abs diff {logits_diff:.2e}", flush=True)

  # 3. The attacks.
  eps = FLAGS.eps
  ours = {
      "apgd_ce": (attacks.ATTACKS["apgd_ce"].attack, dataclasses.replace(
          attacks.ATTACKS["apgd_ce"].settings, eps=eps, loss="ce", num_steps=FLAGS.apgd_steps,
          num_restarts=1)),
      "square": (attacks.ATTACKS["square"].attack, dataclasses.replace(
          attacks.ATTACKS["square"].settings, eps=eps, num_queries=FLAGS.square_queries,
          p_init=FLAGS.square_p_init)),
  }

  def reference(name, seed):
    if name == "apgd_ce":
      return APGDAttack(torch_model, norm="Linf", eps=eps, n_iter=FLAGS.apgd_steps,
                        n_restarts=1, loss="ce", seed=seed, device="cpu")
    return SquareAttack(torch_model, norm="Linf", eps=eps, n_queries=FLAGS.square_queries,
                        p_init=FLAGS.square_p_init, n_restarts=1, loss="margin", seed=seed,
                        device="cpu", resc_schedule=True)

  results["attacks"] = {}
  for name, (attack, settings) in ours.items():
    runs = []
    for seed in range(FLAGS.seed, FLAGS.seed + FLAGS.num_seeds):
      adv, compile_seconds, run_seconds = run_ours(attack, settings, logits_fn, images, labels,
                                                   seed)
      adv_correct = np.asarray(jax.jit(logits_fn)(adv)).argmax(1) == labels
      with torch.no_grad():  # The same images through the PyTorch model.
        adv_correct_torch = torch_model(
            torch.from_numpy(adv.transpose(0, 3, 1, 2).copy())).numpy().argmax(1) == labels
      ours_run = {
          "seed": seed, "settings": dataclasses.asdict(settings),
          "robust_accuracy": float(np.mean(clean_correct & adv_correct)),
          "accuracy_on_adversarial_images": float(np.mean(adv_correct)),
          "robust_accuracy_torch_model": float(np.mean(clean_correct & adv_correct_torch)),
          "clean_wrong_but_adversarial_right": int(np.sum(~clean_correct & adv_correct)),
          "ball_check": check_in_ball(adv, images, eps),
          "compile_seconds": compile_seconds, "run_seconds": run_seconds}
      print(f"ours {name} seed {seed}: robust {ours_run['robust_accuracy']:.3f} "
            f"({run_seconds:.0f}s + {compile_seconds:.0f}s compile)", flush=True)

      torch.manual_seed(seed)
      aa_adv, aa_seconds = run_autoattack(reference(name, seed), (x_torch, y_torch))
      with torch.no_grad():
        aa_correct = torch_model(
            torch.from_numpy(aa_adv.transpose(0, 3, 1, 2).copy())).numpy().argmax(1) == labels
      aa_run = {"seed": seed,
                "robust_accuracy": float(np.mean(clean_correct & aa_correct)),
                "accuracy_on_adversarial_images": float(np.mean(aa_correct)),
                "ball_check": check_in_ball(aa_adv, images, eps), "run_seconds": aa_seconds}
      print(f"AutoAttack {name} seed {seed}: robust {aa_run['robust_accuracy']:.3f} "
            f"({aa_seconds:.0f}s)", flush=True)
      both = clean_correct & adv_correct & aa_correct
      runs.append({"ours": ours_run, "autoattack": aa_run,
                   "robust_under_both": float(np.mean(both)),
                   "fooled_by_ours_only": int(np.sum(clean_correct & ~adv_correct & aa_correct)),
                   "fooled_by_autoattack_only": int(np.sum(
                       clean_correct & adv_correct & ~aa_correct))})

    ours_robust = float(np.mean([r["ours"]["robust_accuracy"] for r in runs]))
    aa_robust = float(np.mean([r["autoattack"]["robust_accuracy"] for r in runs]))
    difference = 100 * (ours_robust - aa_robust)
    results["attacks"][name] = {
        "ours_robust_accuracy": ours_robust, "autoattack_robust_accuracy": aa_robust,
        "difference_points": difference,
        "agree": bool(abs(difference) <= FLAGS.tolerance_points),
        "ours_in_ball_and_box": all(r["ours"]["ball_check"]["passed"] for r in runs),
        "runs": runs}

  # 4. The report.
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(results, f, indent=2)
  seeds = "seed" if FLAGS.num_seeds == 1 else f"mean of {FLAGS.num_seeds} seeds"
  print(f"\n{FLAGS.num_examples} CIFAR-10 test images, eps = {eps * 255:.3g}/255, "
        f"clean accuracy {100 * results['clean_accuracy']:.1f}% ({seeds})\n")
  print("| attack | ours robust (%) | AutoAttack robust (%) | ours - AA (points) | agree | "
        "ours in ball | ours time (s) | AA time (s) |")
  print("|---|---|---|---|---|---|---|---|")
  for name, result in results["attacks"].items():
    ours_time = np.mean([r["ours"]["run_seconds"] for r in result["runs"]])
    aa_time = np.mean([r["autoattack"]["run_seconds"] for r in result["runs"]])
    print(f"| {name} | {100 * result['ours_robust_accuracy']:.1f} | "
          f"{100 * result['autoattack_robust_accuracy']:.1f} | "
          f"{result['difference_points']:+.1f} | {'yes' if result['agree'] else 'NO'} | "
          f"{'yes' if result['ours_in_ball_and_box'] else 'NO'} | {ours_time:.0f} | "
          f"{aa_time:.0f} |")
  if not all(math.isfinite(r["difference_points"]) for r in results["attacks"].values()):
    raise ValueError("non-finite accuracy difference")


if __name__ == "__main__":
  app.run(main)
