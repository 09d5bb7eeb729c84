"""ODG-Q's perturbation bank: K source domains of adversarial perturbation, selected per step.

The bank holds three kinds of domain (Tao & Wong 2022, "ODG-Q: Robust quantization via online
domain generalization", Fig. 1 "multiple-domain perturbations, generated online at global and local
level"; the kinds and their updates are this project's definition, see docs/method.md):

- "global": a universal perturbation u_k (H, W, C) shared by all examples, kept in the train
  state; updated u_k <- clip(u_k + alpha_k sign(mean_n g_n), -eps, eps). Class-wise (an option):
  one universal perturbation u_{k,c} per class c, each updated from the examples of its class
  only (class-wise universal perturbations, as in the class-wise universal adversarial training
  of AAAI 2024), so that example n trains on u_{k,y_n}.
- "local": a per-example perturbation delta_n, carried over the m replays of a minibatch (it starts
  from a uniform random point of the eps-ball, or, with `local_carry_over`, from where the previous
  minibatch left it, as in free adversarial training); after every replay, delta_n <- Proj(d_n +
  alpha sign(g_n)) with d_n the perturbation example n was trained on in that replay, whichever
  domain it came from: "each replay starts from the previous replay's perturbation"
  (docs/method.md).
- "random": uniform noise in [-eps, eps], drawn afresh; no state, no update.
- "memory": one perturbation per training example, carried across epochs and stepped by the
  backward pass of every update that trains on it (`perturbation_memory.py`).

Here g = dLoss/dx_adv is the input gradient of the training loss, from the same backward pass
that trains the network.

Selection picks one domain per example as a one-hot weight row w_n (`uniform`: one domain for the
whole batch, uniformly; `per_example`: one per example, uniformly; `loss_weighted`: one for the
batch, with probabilities softmax(loss_k / T) of a running mean of each domain's loss, favouring
the domains the network currently finds hardest). A domain's running loss is unobserved (NaN)
until it is first chosen; loss-weighted selection picks unobserved domains first, so that every
domain is measured before it is weighed (a domain that started from a made-up low value would never
be chosen again). A domain not chosen keeps its last running loss; as training lowers the losses,
that stale value becomes the highest, and the domain is chosen and measured again.

The perturbation is then the arithmetic mix sum_k w_nk delta_k[n], so changing the selected
domain never changes the compiled program.
A global domain is updated only from the examples that selected it.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from odgq_jax.attacks import projection

DOMAIN_KINDS = ("global", "local", "random", "memory")
SELECTIONS = ("uniform", "per_example", "loss_weighted")
LOSS_AVERAGE_DECAY = 0.9


def init_bank(num_global: int, image_shape: tuple[int, ...], num_domains: int,
              local_shape: tuple[int, ...] | None = None,
              universal_classes: int = 1) -> dict[str, Any]:
  """The bank's persistent state: per-domain running losses (NaN: not observed yet), universal
  perturbations [num_global, universal_classes, H, W, C] when there are global domains (zero; one
  per class when class-wise, else `universal_classes` = 1) and, given `local_shape` (the global
  batch's image shape), the local domain's perturbation carried from one minibatch to the next
  (zero)."""
  state = {"domain_loss": jnp.full((num_domains,), jnp.nan, jnp.float32)}
  if num_global:
    state["universal"] = jnp.zeros((num_global, universal_classes, *image_shape), jnp.float32)
  if local_shape is not None:
    state["local"] = jnp.zeros(local_shape, jnp.float32)
  return state


def select_domains(key: jax.Array, selection: str, batch_size: int, domain_loss: jax.Array,
                   temperature: float) -> jax.Array:
  """One-hot domain weights [N, K] drawn by the `selection` policy.

  Loss-weighted selection draws from softmax(domain_loss / T) once every domain has been observed,
  and before that picks the first unobserved (NaN) domain.
  """
  num_domains = domain_loss.shape[0]
  if selection == "per_example":
    choice = jax.random.randint(key, (batch_size,), 0, num_domains)
  elif selection == "loss_weighted":
    unobserved = jnp.isnan(domain_loss)
    weighted = jax.random.categorical(key, jnp.where(unobserved, 0.0, domain_loss) / temperature)
    choice = jnp.where(jnp.any(unobserved), jnp.argmax(unobserved), weighted)
  else:
    choice = jax.random.categorical(key, jnp.zeros((num_domains,)))
  choice = jnp.broadcast_to(choice, (batch_size,))
  return jax.nn.one_hot(choice, num_domains, dtype=jnp.float32)


def mix_perturbations(weights: jax.Array, candidates: jax.Array) -> jax.Array:
  """sum_k w_nk candidates[k, n]: weights [N, K], candidates [K, N, H, W, C] -> [N, H, W, C]."""
  return jnp.einsum("nk,kn...->n...", weights, candidates)


def universal_candidates(universal: jax.Array, universal_class: jax.Array) -> jax.Array:
  """Each global domain's perturbation of each example, u_{j, c_n}: [G, N, H, W, C].

  `universal_class` [N] is each example's class when the perturbations are class-wise, else 0.
  """
  return universal[:, universal_class]


def update_universal(universal: jax.Array, weights: jax.Array, image_grad: jax.Array,
                     global_domains: tuple[int, ...], step_sizes: tuple[float, ...],
                     eps: float, universal_class: jax.Array) -> jax.Array:
  """u_{j,c} <- clip(u_{j,c} + alpha_j sign(mean of g over the examples of class c that chose
  domain j), -eps, eps) (one c, every example, when not class-wise).

  Perturbations that no example chose stay as they are.
  """
  class_onehot = jax.nn.one_hot(universal_class, universal.shape[1], dtype=image_grad.dtype)
  updated = []
  for j, (domain, step_size) in enumerate(zip(global_domains, step_sizes)):
    chose = weights[:, domain, None] * class_onehot  # [N, classes]
    count = jnp.sum(chose, axis=0)
    mean_grad = jnp.einsum("nc,n...->c...", chose, image_grad) / jnp.maximum(
        count, 1.0).reshape(-1, *([1] * (image_grad.ndim - 1)))
    stepped = jnp.clip(universal[j] + step_size * jnp.sign(mean_grad), -eps, eps)
    updated.append(jnp.where((count > 0).reshape(-1, *([1] * (image_grad.ndim - 1))), stepped,
                             universal[j]))
  return jnp.stack(updated) if updated else universal


def update_local(used_delta: jax.Array, image_grad: jax.Array, images: jax.Array,
                 step_size: float, eps: float) -> jax.Array:
  """delta_n <- Proj(d_n + alpha sign(g_n)), d_n the perturbation example n was trained on.

  Every example's local perturbation steps on from the perturbation of this replay, whichever
  domain it came from, so that each replay starts from the previous replay's perturbation (free
  adversarial training, Shafahi et al. 2019). Proj keeps delta_n in the eps-ball and
  images_n + delta_n in [0, 1].
  """
  return projection.project_linf(images + used_delta + step_size * jnp.sign(image_grad),
                                 images, eps) - images


def update_domain_loss(domain_loss: jax.Array, weights: jax.Array,
                       per_example_loss: jax.Array) -> jax.Array:
  """Running mean (decay 0.9) of each chosen domain's mean loss; unchosen domains keep theirs.

  A domain's first observation replaces its NaN ("unobserved") value.
  """
  count = jnp.sum(weights, axis=0)
  mean_loss = (weights.T @ per_example_loss) / jnp.maximum(count, 1.0)
  averaged = jnp.where(jnp.isnan(domain_loss), mean_loss,
                       LOSS_AVERAGE_DECAY * domain_loss + (1 - LOSS_AVERAGE_DECAY) * mean_loss)
  return jnp.where(count > 0, averaged, domain_loss)
