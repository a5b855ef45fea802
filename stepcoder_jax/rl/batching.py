"""Host-side packing of (prompt, response) token lists into the fixed-shape arrays of a batch.

Layout of one row, length L = P + R:  [left-padded prompt (P) | response, right-padded (R)].
Left-padding the prompt puts every row's first response token at the same column P, which is what
the sampler produces and keeps shapes static (P and R are power-of-two buckets, so XLA compiles
once per bucket, not once per batch).

Per-token convention shared with ppo.py: arrays indexed by t describe token t; a log-prob at t is
log pi(tokens[t] | tokens[:t]), computed from the hidden state at t - 1.
"""

from __future__ import annotations

import numpy as np

from stepcoder_jax.errors import UserError


def bucket(n: int, minimum: int = 8, maximum: int | None = None) -> int:
  """Smallest power of two >= n (and >= minimum), capped at maximum when given."""
  b = minimum
  while b < n:
    b *= 2
  if maximum is not None:
    b = min(b, maximum)
  return b


def pack(
  prompts: list[list[int]],
  responses: list[list[int]],
  pad_id: int,
  prompt_len: int | None = None,
  response_len: int | None = None,
) -> dict[str, np.ndarray]:
  """Pack into int32 arrays tokens/positions/attention_mask/response_mask, each [B, P + R]."""
  if len(prompts) != len(responses):
    raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
  p_len = prompt_len or bucket(max(len(p) for p in prompts))
  r_len = response_len or bucket(max(1, max(len(r) for r in responses)))
  for i, p in enumerate(prompts):
    if len(p) > p_len:
      raise UserError(f"prompt {i} has {len(p)} tokens, more than the prompt length {p_len}")
  b = len(prompts)
  tokens = np.full((b, p_len + r_len), pad_id, np.int32)
  attn = np.zeros((b, p_len + r_len), np.int32)
  resp = np.zeros((b, p_len + r_len), np.int32)
  for i, (p, r) in enumerate(zip(prompts, responses)):
    r = r[:r_len]
    tokens[i, p_len - len(p) : p_len] = p
    attn[i, p_len - len(p) : p_len] = 1
    tokens[i, p_len : p_len + len(r)] = r
    attn[i, p_len : p_len + len(r)] = 1
    resp[i, p_len : p_len + len(r)] = 1
  positions = np.maximum(np.cumsum(attn, axis=1) - 1, 0).astype(np.int32)
  return {"tokens": tokens, "positions": positions, "attention_mask": attn, "response_mask": resp}


def place_response_values(
  values: list[np.ndarray], batch_len: int, prompt_len: int, dtype=np.float32
) -> np.ndarray:
  """Scatter per-response-token values (e.g. FGO masks) into [B, L] at the response columns."""
  out = np.zeros((len(values), batch_len), dtype)
  for i, v in enumerate(values):
    v = np.asarray(v)[: batch_len - prompt_len]
    out[i, prompt_len : prompt_len + len(v)] = v
  return out
