"""Double-Win Quant: switchable-precision models, random precision training, the EOT classifier."""
import flax
import jax
import numpy as np
import pytest

import odgq_jax
from odgq_jax import checkpointing
from odgq_jax import methods
from odgq_jax import models
from odgq_jax import parallel
from tests import test_train

BITS = (4, 8)


def dwq_config(**options):
  config = test_train.tiny_config()
  config.model.switchable_bits = BITS
  config.method = methods.method_config("dwq", **options)
  return config


def switchable_tiny_model(switchable_bits=BITS, weight="uniform"):
  config = test_train.tiny_config()
  config.model.switchable_bits = switchable_bits
  config.model.weight_quantizer = {"name": weight, "bits": 4} if weight != "binary" else {
      "name": "binary"}
  return models.create_model_from_config(config.model, num_classes=4)


def images(n=8, seed=0):
  return np.random.default_rng(seed).uniform(size=(n, 8, 8, 3)).astype(np.float32)


def flat(tree):
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")


def test_switchable_model_has_one_batch_norm_and_step_size_per_precision_and_shared_kernels():
  model = switchable_tiny_model()
  variables = models.init_variables(model, jax.random.PRNGKey(0), images())
  params = flat(variables["params"])
  for bits in BITS:
    assert f"conv_bn/bn/{bits}bit/scale" in params and f"stem/bn/{bits}bit/bias" in params
    assert f"conv_bn/conv/input_step_{bits}bit" in params
    assert f"conv_bn/bn/{bits}bit/mean" in flat(variables["batch_stats"])
  assert "conv_bn/conv/kernel" in params and "classifier/input_step" in params
  # Different precisions give different outputs from the same kernels.
  out4 = model.apply(variables, images(), train=False, precision=4)
  out8 = model.apply(variables, images(), train=False, precision=8)
  assert not np.allclose(out4, out8)


def test_a_train_step_at_one_precision_updates_only_its_batch_statistics():
  model = switchable_tiny_model()
  variables = models.init_variables(model, jax.random.PRNGKey(0), images())
  _, updates = model.apply(variables, images(), train=True, precision=4, mutable=["batch_stats"])
  before, after = flat(variables["batch_stats"]), flat(updates["batch_stats"])
  assert set(before) == set(after)
  for name in before:
    changed = not np.allclose(before[name], after[name])
    assert changed == ("/4bit/" in name), name


@pytest.mark.parametrize("kwargs,message", [
    ({"switchable_bits": (4,)}, "at least two distinct"),
    ({"switchable_bits": (4, 4)}, "at least two distinct"),
    ({"switchable_bits": (4, 9)}, r"bits must be an integer in \[2, 8\]"),
    ({"weight": "binary"}, "needs quantizers with a bit-width"),
])
def test_bad_switchable_bits_are_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    switchable_tiny_model(**kwargs)


def test_precision_must_match_the_model():
  model = switchable_tiny_model()
  variables = models.init_variables(model, jax.random.PRNGKey(0), images())
  with pytest.raises(ValueError, match=r"precision= one of \[4, 8\], got 5"):
    model.apply(variables, images(), train=False, precision=5)
  with pytest.raises(ValueError, match="got None"):
    model.apply(variables, images(), train=False)
  fixed = models.create_model_from_config(test_train.tiny_config().model, num_classes=4)
  fixed_variables = fixed.init(jax.random.PRNGKey(0), images(), train=True)
  with pytest.raises(ValueError, match="fixed-precision model"):
    fixed.apply(fixed_variables, images(), train=False, precision=4)


def test_method_and_model_must_agree_on_switchable_precision():
  with pytest.raises(ValueError, match="set model.switchable_bits"):
    methods.create_method(methods.method_config("dwq"))
  config = test_train.tiny_config()
  config.model.switchable_bits = BITS
  with pytest.raises(ValueError, match=r"trained by \['dwq'\]"):
    methods.create_method_for_run(config)
  assert methods.create_method_for_run(dwq_config()).switchable_bits == BITS


def run_dwq(num_batches, **options):
  mesh = parallel.create_mesh(jax.devices()[:1])
  state, losses, train_step = test_train.run_method_steps(mesh, num_batches, dwq_config(**options))
  assert train_step._cache_size() == 1  # pylint: disable=protected-access
  return state, losses


def test_dwq_reduces_the_loss_and_trains_every_precision_in_one_compiled_step():
  initial, _ = test_train.make_state(dwq_config(), parallel.create_mesh(jax.devices()[:1]))
  state, losses = run_dwq(20)
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
  before, after = flat(initial.batch_stats), flat(state.batch_stats)
  for bits in BITS:  # both precisions were drawn (and trained) in 20 steps
    name = f"conv_bn/bn/{bits}bit/mean"
    assert not np.allclose(before[name], after[name])


def test_dwq_with_pgd_crafting_runs():
  _, losses = run_dwq(3, attack_steps=3, step_size=2 / 255)
  assert np.all(np.isfinite(losses))


def test_classifier_of_a_switchable_model_is_the_expectation_over_precisions(tmp_path):
  state, _ = run_dwq(4)
  config = dwq_config()
  test_train.save_checkpoint(state, tmp_path).close()
  checkpointing.save_or_check_config(config, str(tmp_path))
  checkpointing.save_dataset_info(4, (8, 8, 3), str(tmp_path))
  classifier = odgq_jax.load_classifier(str(tmp_path))
  x = images()
  probabilities = np.mean([
      jax.nn.softmax(classifier.model.apply(classifier.variables, x, train=False, precision=bits))
      for bits in BITS], axis=0)
  np.testing.assert_allclose(jax.nn.softmax(classifier.logits(x)), probabilities, atol=1e-6)
  np.testing.assert_allclose(classifier.logits_fn(x), classifier.logits(x), rtol=1e-5, atol=1e-5)
