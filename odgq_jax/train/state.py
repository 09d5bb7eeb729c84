"""The train state: everything a run needs to continue exactly where it stopped.

It holds the parameters (quantizer parameters such as LSQ step sizes included), the BatchNorm
running statistics, the optimizer state, the step and the run's base PRNG key. The per-step key is
`fold_in(rng, step)`, so a run resumed from a checkpoint draws the same random numbers.
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from odgq_jax import parallel


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  rng: jax.Array  # raw uint32 key data, so that checkpoints store it as a plain array
  apply_fn: Callable[..., Any] = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @property
  def variables(self) -> dict[str, Any]:
    """The model variables, as `apply_fn` takes them."""
    return {"params": self.params, "batch_stats": self.batch_stats}

  def step_rng(self) -> jax.Array:
    """The PRNG key of the current step."""
    return jax.random.fold_in(self.rng, self.step)

  def apply_gradients(self, grads: Any, batch_stats: Any) -> "TrainState":
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)


def create_train_state(rng: jax.Array, model: nn.Module, tx: optax.GradientTransformation,
                       sample_images: jax.Array, mesh: Mesh) -> TrainState:
  """Initialises the model on `sample_images`, a real training batch, replicated over the mesh.

  The model runs in train mode, so that data-initialised quantizer parameters (LSQ step sizes) start
  from the activations the layers see in training (normalised by batch statistics).
  """
  init_rng, run_rng = jax.random.split(rng)

  def init(images):
    variables = model.init(init_rng, images, train=True)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                      rng=run_rng, apply_fn=model.apply, tx=tx)

  abstract = jax.eval_shape(init, sample_images)
  out_shardings = jax.tree.map(lambda _: parallel.replicated_sharding(mesh), abstract)
  return jax.jit(init, out_shardings=out_shardings)(sample_images)
