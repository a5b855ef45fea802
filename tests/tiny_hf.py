"""A random tiny Llama saved by transformers with the tiny tokenizer (shared by test modules)."""

from stepcoder_jax.models.tokenizer import tiny_tokenizer


def make_tiny_llama(path, seed: int = 0, **config):
  """Save a random fp32 Llama (+ the tiny tokenizer) at `path`; returns (torch model, tokenizer).

  Weights are larger than transformers' default init so that greedy choices have clear margins
  (no near-ties that float rounding could flip). `config` overrides the LlamaConfig sizes.
  """
  import torch
  import transformers

  tok = tiny_tokenizer()
  sizes = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    tie_word_embeddings=False,
  )
  sizes.update(config)
  cfg = transformers.LlamaConfig(
    vocab_size=len(tok),
    bos_token_id=tok.bos_token_id,
    eos_token_id=tok.eos_token_id,
    pad_token_id=tok.pad_token_id,
    **sizes,
  )
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(cfg).to(torch.float32).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" not in name:
        p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
  model.save_pretrained(str(path))
  tok.save_pretrained(str(path))
  return model, tok
