"""The sampler: jit-compiled prefill + decode loop over the KV cache.

Device side (pure, jittable, shardable later): `make_sampler(graphdef, cfg, eos_ids, pad_id)`
returns `fn(state, tokens, mask, rng, max_new_tokens) -> SampleOutput`. One prefill pass writes the
left-padded prompt into the cache, then a `lax.while_loop` draws one token per step for every row
and stops when every row has emitted an EOS id or `max_new_tokens` tokens were drawn.

Log-probs: `SampleOutput.logprobs` is log softmax(logits) of the drawn token at temperature 1, with
no top-k/top-p filtering, i.e. the log-probability under the model itself, which is what PPO's
ratio needs (the "old" policy's log-probs), whatever temperature/top-p produced the sample.

Recompilation is rare because the prompt length is padded to a power of two (at least
`cfg.min_prompt_bucket`) and the output buffer to a power of two >= max_new_tokens; the actual
`max_new_tokens`, the temperature and top_p are traced scalars (only greedy-or-not, top_k and
top-p-on-or-off are compiled in). Every trace (= compile) is logged and counted.

Host side: `generate_text(model, tokenizer, prompts, cfg)` tokenizes, left-pads, samples, and
cuts each response with `completion.cut` (the text before the first stop string, the tokens
through the one that completed it), the one cut shared with training and evaluation.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stepcoder_jax import completion
from stepcoder_jax.models.config import SamplingConfig
from stepcoder_jax.models.decoder import left_pad_positions

log = logging.getLogger(__name__)

_NEG_INF = -1e30
_compiles = 0


def compile_count() -> int:
  """How many times a sampler was traced (each trace is one compile) in this process."""
  return _compiles


def bucket(n: int, minimum: int = 1) -> int:
  """The smallest power of two >= max(n, minimum)."""
  n = max(int(n), int(minimum), 1)
  return 1 << (n - 1).bit_length()


@flax.struct.dataclass
class SampleOutput:
  """What the sampler drew, per row.

  Attributes:
    tokens: [B, N] int32 generated ids; `pad_id` after a row's end (N = new-token bucket).
    logprobs: [B, N] float32 log-prob of each drawn token under the model at temperature 1
      (0 after a row's end).
    lengths: [B] int32 generated tokens per row, the EOS token included when one was drawn.
    finished: [B] bool, True when the row ended with an EOS id (False: hit max_new_tokens).
  """

  tokens: jax.Array
  logprobs: jax.Array
  lengths: jax.Array
  finished: jax.Array


def _nucleus(sorted_logits: jax.Array, top_p: float) -> jax.Array:
  """Mask (to -inf) the tail of descending-sorted logits beyond cumulative probability top_p."""
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
  return jnp.where(before < top_p, sorted_logits, _NEG_INF)  # the top token always survives


@dataclasses.dataclass(frozen=True)
class _Static:
  """What shapes the compiled program; temperature and top_p values are traced operands."""

  greedy: bool
  top_k: int
  nucleus: bool
  new_bucket: int

  @classmethod
  def of(cls, cfg: SamplingConfig) -> "_Static":
    return cls(
      greedy=cfg.greedy,
      top_k=0 if cfg.greedy else cfg.top_k,
      nucleus=not cfg.greedy and cfg.top_p < 1.0,
      new_bucket=bucket(cfg.max_new_tokens),
    )


def draw(
  logits: jax.Array,
  rng: jax.Array,
  cfg: SamplingConfig | _Static,
  temperature: float | jax.Array | None = None,
  top_p: float | jax.Array | None = None,
) -> jax.Array:
  """Draw one token per row from float32 logits [B, V] with temperature, top-k and top-p.

  `cfg` gives the static choices; `temperature`/`top_p` default to a SamplingConfig's values.
  """
  if isinstance(cfg, SamplingConfig):
    temperature = cfg.temperature if temperature is None else temperature
    top_p = cfg.top_p if top_p is None else top_p
    cfg = _Static.of(cfg)
  if cfg.greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  x = logits / temperature
  if cfg.top_k > 0:  # filter within the k best only: no full-vocabulary sort
    vals, idx = jax.lax.top_k(x, min(cfg.top_k, x.shape[-1]))
    if cfg.nucleus:
      vals = _nucleus(vals, top_p)
    choice = jax.random.categorical(rng, vals, axis=-1)
    return jnp.take_along_axis(idx, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
  if cfg.nucleus:
    sorted_x = -jnp.sort(-x, axis=-1)
    kept = _nucleus(sorted_x, top_p)
    threshold = jnp.min(jnp.where(kept > _NEG_INF / 2, kept, jnp.inf), axis=-1, keepdims=True)
    x = jnp.where(x >= threshold, x, _NEG_INF)
  return jax.random.categorical(rng, x, axis=-1).astype(jnp.int32)


@functools.lru_cache(maxsize=64)
def _cached_sampler(graphdef, key: _Static, eos_ids: tuple[int, ...], pad_id: int):
  return jax.jit(sample_fn(graphdef, key, eos_ids, pad_id))


def make_sampler(
  graphdef: nnx.GraphDef, cfg: SamplingConfig, eos_ids: Sequence[int] = (), pad_id: int = 0
) -> Callable[..., SampleOutput]:
  """A jitted `fn(state, tokens, mask, rng, max_new_tokens) -> SampleOutput`.

  Args:
    graphdef: from `nnx.split(decoder)`; `state` is the matching state.
    cfg: sampling settings; `max_new_tokens` sets the output buffer (rounded up to a power of
      two); the exact count is the traced `max_new_tokens` argument (default: cfg's).
    eos_ids: ids that end a row (may be empty).
    pad_id: filler after a row's end.

  `tokens`/`mask`: [B, P] int32 / bool, left-padded (use `pad_prompts`). `rng`: a jax PRNG key.
  Samplers are cached: equal arguments return the same compiled function.
  """
  fn = _cached_sampler(graphdef, _Static.of(cfg), tuple(int(e) for e in eos_ids), int(pad_id))
  default_max = cfg.max_new_tokens
  knobs = (
    jnp.asarray(cfg.temperature if cfg.temperature > 0 else 1.0, jnp.float32),
    jnp.asarray(cfg.top_p, jnp.float32),
  )

  def sample(state, tokens, mask, rng, max_new_tokens: int | jax.Array | None = None):
    n = default_max if max_new_tokens is None else max_new_tokens
    return fn(state, tokens, mask, rng, jnp.asarray(n, jnp.int32), *knobs)

  return sample


def sample_fn(
  graphdef,
  cfg: SamplingConfig | _Static,
  eos_ids: tuple[int, ...] = (),
  pad_id: int = 0,
  group: int = 1,
):
  """The un-jitted pure sampler, for callers that jit it themselves (e.g. with shardings).

  Returns `run(state, tokens, mask, rng, max_new_tokens, temperature, top_p) -> SampleOutput`;
  the last three are scalar arrays (int32, float32, float32). Prefer `make_sampler` otherwise.

  `group` (static): the rows come in runs of `group` identical prompts (a GRPO group: one
  problem, several samples), so the prefill runs on the first row of each run only and its cache
  and last logits are repeated; the draws are the same, the prefill's cost is 1/group. The
  caller checks the runs (`prompt_group`); B must be a multiple of it.
  """
  if isinstance(cfg, SamplingConfig):
    cfg = _Static.of(cfg)
  eos_ids = tuple(int(e) for e in eos_ids)
  n_buf = cfg.new_bucket

  def run(state, tokens, mask, rng, max_new_tokens, temperature, top_p) -> SampleOutput:
    global _compiles
    _compiles += 1
    b, p = tokens.shape
    log.info(
      "compiling sampler: batch=%d prompt_bucket=%d new_bucket=%d greedy=%s top_k=%d top_p=%s",
      b,
      p,
      n_buf,
      cfg.greedy,
      cfg.top_k,
      "on" if cfg.nucleus else "off",
    )
    model = nnx.merge(graphdef, state)
    mask = mask.astype(bool)
    tokens = tokens.astype(jnp.int32)
    max_new = jnp.minimum(max_new_tokens, n_buf)
    if b % group:
      raise ValueError(f"sampler: batch {b} is not a multiple of the prompt group {group}")
    first_tokens, first_mask = tokens[::group], mask[::group]
    cache = model.init_cache(b // group, p + n_buf)
    hidden, cache = model(first_tokens, left_pad_positions(first_mask), first_mask, cache)
    logits = model.logits(hidden[:, -1])  # left padding: the last column is the last real token
    if group > 1:  # every row of a run continues from its run's prefill
      per_row = lambda x: jnp.repeat(x, group, axis=0) if x.ndim else x
      cache, logits = jax.tree.map(per_row, cache), per_row(logits)
    eos = jnp.asarray(eos_ids if eos_ids else (-1,), jnp.int32)
    ones = jnp.ones((b, 1), bool)

    def cond(c):
      i, _, _, _, done, *_ = c
      return (i < max_new) & ~jnp.all(done)

    def body(c):
      i, cache, logits, pos, done, out_tok, out_lp, lengths, finished = c
      col = draw(logits, jax.random.fold_in(rng, i), cfg, temperature, top_p)
      lp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), col[:, None], axis=-1)[:, 0]
      tok = model.token_ids(col)  # logit column -> token id (model.output_vocab)
      tok = jnp.where(done, pad_id, tok)
      lp = jnp.where(done, 0.0, lp)
      out_tok = jax.lax.dynamic_update_slice(out_tok, tok[:, None], (0, i))
      out_lp = jax.lax.dynamic_update_slice(out_lp, lp[:, None], (0, i))
      lengths = lengths + (~done).astype(jnp.int32)
      hit_eos = ~done & jnp.any(tok[:, None] == eos[None, :], axis=-1)
      finished = finished | hit_eos
      done = done | hit_eos
      hidden, cache = model(tok[:, None], pos[:, None], ones, cache)
      logits = model.logits(hidden[:, 0])
      return i + 1, cache, logits, pos + 1, done, out_tok, out_lp, lengths, finished

    init = (
      jnp.zeros((), jnp.int32),
      cache,
      logits,
      jnp.sum(mask, axis=-1).astype(jnp.int32),  # position of the first new token
      jnp.zeros((b,), bool),
      jnp.full((b, n_buf), pad_id, jnp.int32),
      jnp.zeros((b, n_buf), jnp.float32),
      jnp.zeros((b,), jnp.int32),
      jnp.zeros((b,), bool),
    )
    out = jax.lax.while_loop(cond, body, init)
    return SampleOutput(tokens=out[5], logprobs=out[6], lengths=out[7], finished=out[8])

  return run


# ------------------------------------------------------------------------------------------------
# Host side


def prompt_group(prompt_ids: Sequence[Sequence[int]], size: int) -> int:
  """`size` when the rows come in consecutive runs of `size` identical prompts (the samples of
  one problem), else 1: the `group` a sampler may prefill once per run."""
  n = len(prompt_ids)
  if size <= 1 or n % size:
    return 1
  same = all(list(prompt_ids[i]) == list(prompt_ids[i - i % size]) for i in range(n))
  return size if same else 1


def pad_prompts(
  prompt_ids: Sequence[Sequence[int]],
  pad_id: int,
  min_bucket: int = 16,
  length: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Left-pad token lists to a power-of-two length (or exactly `length`, when given): (tokens
  [B, P] int32, mask [B, P] bool)."""
  if not prompt_ids or any(len(r) == 0 for r in prompt_ids):
    raise ValueError("pad_prompts: every prompt needs at least one token")
  longest = max(len(r) for r in prompt_ids)
  if length is not None and length < longest:
    raise ValueError(f"pad_prompts: a prompt of {longest} tokens does not fit length {length}")
  p = length if length is not None else bucket(longest, min_bucket)
  tokens = np.full((len(prompt_ids), p), pad_id, np.int32)
  mask = np.zeros((len(prompt_ids), p), bool)
  for i, row in enumerate(prompt_ids):
    tokens[i, p - len(row) :] = row
    mask[i, p - len(row) :] = True
  return tokens, mask


@dataclasses.dataclass
class Completion:
  """One generated completion.

  Attributes:
    text: decoded text without special tokens, cut before the first stop string (one that
      starts in the prompt counts too): `completion.cut`, as in training and evaluation.
    token_ids: generated ids (EOS included if drawn; cut after the token completing a stop
      string).
    logprobs: per token, log-prob under the model at temperature 1.
    finish_reason: 'eos', 'stop' (a stop string) or 'length'.
  """

  text: str
  token_ids: list[int]
  logprobs: list[float]
  finish_reason: str


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
  """Token ids per prompt with the tokenizer's own special tokens (e.g. Gemma's BOS)."""
  return [completion.encode(tokenizer, p) for p in prompts]


def eos_ids_for(model_cfg, tokenizer) -> tuple[int, ...]:
  """EOS ids from the model config and the tokenizer, deduplicated."""
  ids = list(model_cfg.eos_ids)
  if tokenizer is not None and tokenizer.eos_token_id is not None:
    ids.append(int(tokenizer.eos_token_id))
  return tuple(sorted(set(ids)))


def special_ids(
  model_cfg, tokenizer, eos_ids: Sequence[int] | None = None
) -> tuple[tuple[int, ...], int]:
  """(EOS ids, pad id): the one place training, evaluation, SFT and generate take them from.
  EOS: `eos_ids` when given, else `eos_ids_for`. The pad id is the tokenizer's, else the first
  EOS id, else 0 (padding is masked anyway)."""
  eos = tuple(int(e) for e in eos_ids) if eos_ids is not None else eos_ids_for(model_cfg, tokenizer)
  pad = getattr(tokenizer, "pad_token_id", None)
  return eos, int(pad) if pad is not None else (eos[0] if eos else 0)


def generate_ids(
  model,
  prompt_ids: Sequence[Sequence[int]],
  cfg: SamplingConfig,
  rng: jax.Array,
  eos_ids: Sequence[int],
  pad_id: int,
) -> SampleOutput:
  """Sample for already-tokenized prompts; returns numpy arrays cut to cfg.max_new_tokens."""
  graphdef, state = nnx.split(model)
  tokens, mask = pad_prompts(prompt_ids, pad_id, cfg.min_prompt_bucket)
  fn = make_sampler(graphdef, cfg, eos_ids, pad_id)
  out = jax.device_get(fn(state, tokens, mask, rng, cfg.max_new_tokens))
  n = cfg.max_new_tokens
  return SampleOutput(
    tokens=np.asarray(out.tokens[:, :n]),
    logprobs=np.asarray(out.logprobs[:, :n]),
    lengths=np.asarray(out.lengths),
    finished=np.asarray(out.finished),
  )


def generate_text(
  model,
  tokenizer,
  prompts: Sequence[str],
  cfg: SamplingConfig | None = None,
  *,
  seed: int = 0,
  rng: jax.Array | None = None,
  eos_ids: Sequence[int] | None = None,
) -> list[Completion]:
  """Complete each prompt; see `Completion`.

  Args:
    model: a Decoder.
    tokenizer: its HF tokenizer.
    prompts: texts; tokenized with the tokenizer's special tokens and left-padded.
    cfg: sampling settings (default: greedy, 256 new tokens).
    seed / rng: randomness for temperature > 0 (rng wins when given).
    eos_ids: default: the model config's and the tokenizer's EOS ids.
  """
  cfg = cfg or SamplingConfig()
  rng = jax.random.key(seed) if rng is None else rng
  eos, pad = special_ids(model.cfg, tokenizer, eos_ids)
  prompt_ids = encode_prompts(tokenizer, prompts)
  out = generate_ids(model, prompt_ids, cfg, rng, eos, pad)
  results = []
  for i in range(len(prompts)):
    n = int(out.lengths[i])
    c = completion.cut(
      tokenizer,
      out.tokens[i, :n],
      cfg.stop_strings,
      eos,
      context=prompts[i],
      lead=prompt_ids[i][-1],
    )
    lps = [float(x) for x in out.logprobs[i, : len(c.ids)]]
    results.append(Completion(text=c.text, token_ids=c.ids, logprobs=lps, finish_reason=c.finish))
  return results
