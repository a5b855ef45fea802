"""PPO's critic: the policy's backbone with a scalar head, one value per position.

`ValueModel.from_policy` starts the critic from the (SFT) policy's weights, as StepCoder and most
RLHF setups do, so the value estimates start from useful features rather than random ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from stepcoder_jax.models import layers
from stepcoder_jax.models.config import ModelConfig
from stepcoder_jax.models.decoder import Decoder


class ValueModel(nnx.Module):
  """Decoder backbone (no LM head) + `value_head`: [B, T] float32 values."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs | None = None):
    rngs = rngs if rngs is not None else nnx.Rngs(0)
    self.cfg = cfg
    self.backbone = Decoder(cfg, rngs, lm_head=False)
    pdt = jnp.dtype(cfg.param_dtype)
    # Small init so the first value estimates are near zero and do not swamp early advantages.
    self.value_head = layers.param(
      rngs, nnx.initializers.normal(1e-3), (cfg.hidden_size,), pdt, ("embed",)
    )
    self.value_bias = layers.param(rngs, nnx.initializers.zeros, (), pdt, ())

  def __call__(
    self, tokens: jax.Array, positions: jax.Array, attention_mask: jax.Array
  ) -> jax.Array:
    hidden, _ = self.backbone(tokens, positions, attention_mask)
    v = jnp.einsum(
      "btd,d->bt",
      hidden,
      self.value_head[...].astype(hidden.dtype),
      preferred_element_type=jnp.float32,
    )
    return v + self.value_bias[...].astype(jnp.float32)

  @classmethod
  def from_policy(cls, policy: Decoder, rngs: nnx.Rngs | None = None) -> "ValueModel":
    """A critic whose backbone is a copy of `policy`'s (embeddings, blocks, final norm)."""
    model = cls(policy.cfg, rngs)
    src = nnx.state(policy, nnx.Param)
    dst = nnx.state(model.backbone, nnx.Param)
    # Copy (not alias) so that updating one model never shows up in the other.
    copied = jax.tree.map(jnp.array, {k: v for k, v in src.items() if k in dst})
    nnx.update(model.backbone, nnx.State(copied))
    return model
