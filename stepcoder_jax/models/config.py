"""Light gin-configurable dataclasses (no jax import)."""

import dataclasses

import gin


# ---------------------------------------------------------------------------------------------
# Model architecture (owner: models). Plain values only, so it stays hashable and can be a static
# argument of jitted functions.

FAMILIES = ("llama", "qwen2", "gemma3")
# What a block keeps for the backward pass: 'none' keeps every activation; 'full' keeps only the
# block's input and recomputes its forward; 'dots' keeps the matmul outputs (projections and MLP,
# not attention's batched products) and recomputes only the element-wise work between them.
REMAT_POLICIES = ("none", "full", "dots")


def remat_policy(value: bool | str | None) -> str:
  """A `remat` setting as a policy name; True and False (the older values) mean 'full', 'none'."""
  if value is True:
    return "full"
  if value is False or value is None:
    return "none"
  if value in REMAT_POLICIES:
    return value
  raise ValueError(f"remat: {value!r} is not a bool or one of {REMAT_POLICIES}")


SLIDING = "sliding_attention"
GLOBAL = "full_attention"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of one decoder; the family picks the block layout (see models/decoder.py).

  Attributes:
    family: 'llama' (DeepSeek-Coder, CodeLlama), 'qwen2' (Qwen2.5-Coder) or 'gemma3'.
    rope_scaling: None or sorted (key, value) pairs of HF's rope_scaling dict ('linear' or
      'llama3'); applies to global layers. Pairs, not a dict, so the config stays hashable.
    layer_types: per layer, 'sliding_attention' or 'full_attention'.
    sliding_window: keys at distance >= window are masked in sliding layers.
    query_pre_attn_scalar: Gemma's attention scale is this ** -0.5 (else head_dim ** -0.5).
    attention_bias: bias on q, k, v projections; attention_out_bias: bias on o_proj.
    dtype: compute dtype name ('float32' | 'bfloat16'); param_dtype: storage dtype name.
    remat: what each block keeps for the backward pass: a REMAT_POLICIES name, or True ('full':
      rematerialize the block) / False ('none'). Kept as given (a checkpoint's config digest
      stays the same); read it through `remat_policy`. Changes memory and time, not results.
    output_vocab: None (every token), or the sorted token ids the policy may emit: the output
      projection, the sampler and every scored log-prob use this subset alone (a softmax over it),
      so sampling and scoring agree exactly. A CPU speed lever (Gemma's 262k tokens are mostly
      other scripts); a deviation from the model, off unless set. See models/output_vocab.py.
    scan_layers: full forward passes (training, scoring) run the blocks as one `lax.scan` over
      their stacked parameters: one block to compile instead of num_layers. Decoding with a KV
      cache keeps the loop.
  """

  family: str = "llama"
  vocab_size: int = 32000
  hidden_size: int = 4096
  intermediate_size: int = 11008
  num_layers: int = 32
  num_heads: int = 32
  num_kv_heads: int = 32
  head_dim: int = 128
  rope_theta: float = 10000.0
  rope_local_theta: float = 10000.0
  rope_scaling: tuple[tuple[str, object], ...] | None = None
  rms_norm_eps: float = 1e-6
  tie_embeddings: bool = False
  attention_bias: bool = False
  attention_out_bias: bool = False
  mlp_bias: bool = False
  hidden_act: str = "silu"
  sliding_window: int | None = None
  layer_types: tuple[str, ...] | None = None
  query_pre_attn_scalar: float | None = None
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  max_position_embeddings: int = 4096
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  pad_token_id: int | None = None
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool | str = False
  scan_layers: bool = False
  output_vocab: tuple[int, ...] | None = None

  def __post_init__(self):
    remat_policy(self.remat)  # raises on an unknown policy
    if self.family not in FAMILIES:
      raise ValueError(f"ModelConfig.family: {self.family!r} is not one of {FAMILIES}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
        f"ModelConfig.num_kv_heads: {self.num_kv_heads} does not divide num_heads={self.num_heads}"
      )
    if self.output_vocab is not None:
      ids = self.output_vocab
      if not ids or list(ids) != sorted(set(ids)) or ids[0] < 0 or ids[-1] >= self.vocab_size:
        raise ValueError(
          f"ModelConfig.output_vocab: not {len(ids)} sorted distinct ids in [0, {self.vocab_size})"
        )
    if self.layer_types is not None and len(self.layer_types) != self.num_layers:
      raise ValueError(
        f"ModelConfig.layer_types: {len(self.layer_types)} entries for {self.num_layers} layers"
      )

  @property
  def is_gemma(self) -> bool:
    return self.family == "gemma3"

  @property
  def eos_ids(self) -> tuple[int, ...]:
    """EOS ids as a tuple (HF allows one id or a list)."""
    if self.eos_token_id is None:
      return ()
    if isinstance(self.eos_token_id, int):
      return (self.eos_token_id,)
    return tuple(self.eos_token_id)

  def layer_type(self, i: int) -> str:
    if self.layer_types is None:
      return GLOBAL
    return self.layer_types[i]

  def rope_scaling_dict(self) -> dict | None:
    return None if self.rope_scaling is None else dict(self.rope_scaling)

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  @classmethod
  def tiny(cls, family: str = "llama", vocab_size: int = 300, **overrides) -> "ModelConfig":
    """A few-kilobyte model of the given family, for tests and CPU smoke runs."""
    base = dict(
      family=family,
      vocab_size=vocab_size,
      hidden_size=64,
      intermediate_size=128,
      num_layers=2,
      num_heads=4,
      num_kv_heads=2,
      head_dim=16,
      rms_norm_eps=1e-6,
      max_position_embeddings=512,
      bos_token_id=1,
      eos_token_id=2,
      pad_token_id=0,
    )
    if family == "qwen2":
      base.update(attention_bias=True, tie_embeddings=True, rope_theta=1e6)
    elif family == "gemma3":
      base.update(
        num_layers=3,
        tie_embeddings=True,
        hidden_act="gelu_pytorch_tanh",
        rope_theta=1e6,
        rope_local_theta=1e4,
        sliding_window=4,
        layer_types=(SLIDING, SLIDING, GLOBAL),
        query_pre_attn_scalar=16.0,
      )
    base.update(overrides)
    return cls(**base)


@gin.configurable("model")
@dataclasses.dataclass
class ModelSpec:
  """Which model to use: a path (HF dir, GGUF file, checkpoint) or a preset name like 'tiny-llama'.

  dtype / param_dtype: compute and storage dtypes ('float32' | 'bfloat16'); None keeps the
  checkpoint's. remat: what blocks keep for the backward pass (PPO/SFT): 'full' (True) recomputes
  each block's forward, 'dots' keeps the matmul outputs and recomputes the rest, 'none' keeps
  everything; memory against time, the same results. False leaves the checkpoint's setting.
  scan_layers: run full forward passes as a scan over the blocks (ModelConfig.scan_layers).
  output_vocab: None (every token), a shipped vocabulary name ('gemma3_code') or an .npz path
    written by stepcoder_jax/models/vocab_build.py: the policy samples and is scored over those ids
    only (ModelConfig.output_vocab; a documented CPU deviation, see models/output_vocab.py).
  """

  path: str = "tiny-llama"  # what --model takes: HF dir, Hub id, .gguf, checkpoint, preset
  dtype: str | None = None
  param_dtype: str | None = None
  remat: bool | str = False
  scan_layers: bool = False
  output_vocab: str | None = None

  def __post_init__(self):
    if not isinstance(self.remat, bool) and self.remat not in REMAT_POLICIES:
      from stepcoder_jax.errors import UserError

      raise UserError(
        f"gin model.remat: {self.remat!r} is not True, False or one of {REMAT_POLICIES}"
      )

  @property
  def remat_override(self) -> str | None:
    """The policy this spec sets on a loaded model, or None to keep the model's own (False)."""
    return None if self.remat is False else remat_policy(self.remat)

  @property
  def preset_family(self) -> str | None:
    """'llama' for 'tiny-llama' etc.; None when path is not a tiny preset."""
    if self.path.startswith("tiny-") and self.path[5:] in FAMILIES:
      return self.path[5:]
    return None


# ---------------------------------------------------------------------------------------------
# Sampling (owner: sampler, stepcoder_jax/sampling.py).


@gin.configurable("sampling")
@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How the sampler draws completions.

  Attributes:
    temperature: 0 means greedy (argmax); otherwise logits are divided by it before sampling.
    top_p: nucleus sampling; keep the smallest set of tokens whose probability reaches top_p
      (1.0 = off).
    top_k: keep the k most likely tokens (0 = off).
    max_new_tokens: generated tokens per row at most (EOS included).
    stop_strings: host-side stops: the completion is cut before the first occurrence of any
      (e.g. a closing code fence for chat models).
    min_prompt_bucket: prompt lengths are padded to a power of two at least this large, and the
      new-token buffer to a power of two, so the jitted sampler recompiles rarely.
  """

  temperature: float = 0.0
  top_p: float = 1.0
  top_k: int = 0
  max_new_tokens: int = 256
  stop_strings: tuple[str, ...] = ()
  min_prompt_bucket: int = 16

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f"sampling.temperature: {self.temperature} < 0")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"sampling.top_p: {self.top_p} not in (0, 1]")
    if self.top_k < 0:
      raise ValueError(f"sampling.top_k: {self.top_k} < 0")
    if self.max_new_tokens < 1:
      raise ValueError(f"sampling.max_new_tokens: {self.max_new_tokens} < 1")
    # gin passes lists; a frozen config must stay hashable (it keys the compile cache)
    object.__setattr__(self, "stop_strings", tuple(self.stop_strings))

  @property
  def greedy(self) -> bool:
    return self.temperature == 0.0
