"""The train state: everything a run needs to continue exactly where it stopped.

It holds the parameters (quantizer parameters such as LSQ step sizes included), the BatchNorm
running statistics, the optimizer state, the step, the run's base PRNG key and the training
method's own state (e.g. ODG-Q's perturbation bank; empty for natural training). The per-step key is
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

from odgq_jax import models
from odgq_jax import parallel


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  rng: jax.Array  # raw uint32 key data, so that checkpoints store it as a plain array
  method_state: Any
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


def _initializer(rng: jax.Array, model: nn.Module, tx: optax.GradientTransformation,
                 method_state: Any) -> Callable[[jax.Array], TrainState]:
  """The function images -> initial TrainState (model initialised in train mode on the images)."""
  init_rng, run_rng = jax.random.split(rng)

  def init(images):
    variables = models.init_variables(model, init_rng, images)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                      rng=run_rng, method_state=method_state, apply_fn=model.apply, tx=tx)

  return init


def state_sharding(state: TrainState, mesh: Mesh, method_state_sharding: Any) -> TrainState:
  """The layout of a train state on `mesh`, in its structure: every leaf replicated but the
  method state's, laid out by `method_state_sharding` (`TrainingMethod.method_state_sharding`;
  None: replicated too).

  On a one-device mesh everything is replicated: a split over one device is no split, and XLA
  reports the train step's outputs so; laid out the same way, the state goes in and out of the
  step in one layout and the step compiles once.
  """
  sharding = jax.tree.map(lambda _: parallel.replicated_sharding(mesh), state)
  if method_state_sharding is None or mesh.size == 1:
    return sharding
  return sharding.replace(method_state=method_state_sharding)


def create_train_state(rng: jax.Array, model: nn.Module, tx: optax.GradientTransformation,
                       sample_images: jax.Array, mesh: Mesh, method_state: Any = None,
                       method_state_sharding: Any = None) -> TrainState:
  """Initialises the model on `sample_images`, a real training batch, on the mesh.

  The model runs in train mode, so that data-initialised quantizer parameters (LSQ step sizes) start
  from the activations the layers see in training (normalised by batch statistics).
  `method_state` is the training method's initial state (None: natural training, no state), laid
  out by `method_state_sharding` (`TrainingMethod.method_state_sharding`; None: replicated);
  everything else is replicated.
  """
  init = _initializer(rng, model, tx, {} if method_state is None else method_state)
  abstract = jax.eval_shape(init, sample_images)
  out_shardings = state_sharding(abstract, mesh, method_state_sharding)
  return jax.jit(init, out_shardings=out_shardings)(sample_images)


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation,
                         image_shape: tuple[int, ...], mesh: Mesh, method_state: Any = None,
                         method_state_sharding: Any = None) -> TrainState:
  """The structure, shapes and shardings of a train state (as `create_train_state` lays it out),
  computing nothing.

  This is what a checkpoint is restored into when no state exists yet (e.g. for evaluation).
  """
  init = _initializer(jax.random.PRNGKey(0), model, tx,
                      {} if method_state is None else method_state)
  abstract = jax.eval_shape(init, jax.ShapeDtypeStruct((mesh.size, *image_shape), jnp.float32))
  return jax.tree.map(lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      abstract, state_sharding(abstract, mesh, method_state_sharding))
