"""Per-token log-probs and entropy without materialising [batch, length, vocab] float32 logits.

The sequence is cut into chunks of `chunk` positions; each chunk's logits ([B, chunk, V] float32)
exist only inside one step of a `lax.map`. The chunk function is rematerialised (jax.checkpoint),
so the backward pass also keeps only one chunk of logits alive instead of stacking all of them as
scan residuals. With Gemma 3's 262k vocabulary this is the difference between fitting and not.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _chunk_stats(h: jax.Array, w: jax.Array, y: jax.Array, softcap: float | None):
  """log p(y) and entropy for one chunk: h [B, C, D], w [V, D], y [B, C] -> two [B, C] f32."""
  logits = jnp.einsum("bcd,vd->bcv", h, w.astype(h.dtype), preferred_element_type=jnp.float32)
  if softcap:
    logits = jnp.tanh(logits / softcap) * softcap
  lse = jax.nn.logsumexp(logits, axis=-1)
  target = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
  probs = jnp.exp(logits - lse[..., None])
  entropy = lse - jnp.sum(probs * logits, axis=-1)
  return target - lse, entropy


# Log-prob given to a target outside the output vocabulary: it cannot be sampled (finite, so a
# masked-out prompt column times 0 stays 0).
OUTSIDE_VOCAB_LOGP = -1e9


def columns_of(targets: jax.Array, vocab: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(column, inside): where each target id sits in the sorted `vocab`, and whether it is there."""
  col = jnp.clip(jnp.searchsorted(vocab, targets), 0, vocab.shape[0] - 1).astype(jnp.int32)
  return col, jnp.take(vocab, col) == targets


def token_logprobs(
  hidden: jax.Array,
  head_w: jax.Array,
  targets: jax.Array,
  *,
  chunk: int = 128,
  softcap: float | None = None,
  vocab: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Log-probability of `targets` and the entropy of the full distribution, per position.

  Args:
    hidden: [B, T, D] final hidden states (Decoder output).
    head_w: [V, D] output matrix (Decoder.head_weight()[0]).
    targets: [B, T] int token ids whose log-prob is wanted at each position (usually the
      inputs shifted left by one).
    chunk: positions per chunk; T is padded up to a multiple.
    softcap: final logit softcap (Gemma 2 style), or None.
    vocab: the sorted token ids of `head_w`'s rows (Decoder.output_head) when it is an output
      vocabulary, else None. The distribution is the softmax over these rows; a target outside
      them gets OUTSIDE_VOCAB_LOGP.

  Returns:
    (logp [B, T], entropy [B, T]), both float32.
  """
  inside = None
  if vocab is not None:
    targets, inside = columns_of(targets, vocab)
  b, t, d = hidden.shape
  chunk = max(1, min(chunk, t))
  n = -(-t // chunk)
  pad = n * chunk - t
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
  hs = hidden.reshape(b, n, chunk, d).swapaxes(0, 1)  # [n, B, C, D]
  ys = targets.astype(jnp.int32).reshape(b, n, chunk).swapaxes(0, 1)
  fn = jax.checkpoint(lambda h, y: _chunk_stats(h, head_w, y, softcap))
  logp, ent = jax.lax.map(lambda hy: fn(*hy), (hs, ys))
  logp = logp.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]
  ent = ent.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]
  if inside is not None:
    logp = jnp.where(inside, logp, OUTSIDE_VOCAB_LOGP)
  return logp, ent


def sequence_logprobs(
  model, tokens: jax.Array, positions: jax.Array, attention_mask: jax.Array, *, chunk: int = 128
) -> tuple[jax.Array, jax.Array]:
  """Log-prob of each next token under `model` (a Decoder): entry t scores tokens[:, t + 1].

  The last position has no next token and gets 0 (log-prob and entropy), so the output keeps the
  [B, T] shape of the inputs; callers mask it with their response mask.
  """
  hidden, _ = model(tokens, positions, attention_mask)
  w, softcap, vocab = model.output_head()
  nxt = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
  logp, ent = token_logprobs(hidden, w, nxt, chunk=chunk, softcap=softcap, vocab=vocab)
  last = jnp.arange(tokens.shape[1]) == tokens.shape[1] - 1
  return jnp.where(last, 0.0, logp), jnp.where(last, 0.0, ent)
