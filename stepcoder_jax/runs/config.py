"""Light gin configs of the runs: SFT and evaluation (no jax import). The training loop's
TrainConfig lives with the algorithm in rl/config.py."""

import dataclasses

import gin


# max_prompt_tokens of SFTConfig and EvalConfig: gin's prompt.max_tokens (data/config.py), the
# limit training uses too, or a Python caller's; never a gin binding of its own.
@gin.configurable("sft", denylist=["max_prompt_tokens"])
@dataclasses.dataclass
class SFTConfig:
  """Next-token training on canonical solutions (the paper's SFT stage; the reference policy)."""

  steps: int = 30  # optimizer steps (the maximum with validation)
  batch_size: int = 8  # examples per step
  learning_rate: float = 1e-5  # AdamW peak learning rate
  warmup_steps: int = 3  # linear warm-up steps
  weight_decay: float = 0.0  # AdamW weight decay
  max_grad_norm: float = 1.0  # gradient clipping
  max_len: int = 512  # longest prompt + target; longer examples are skipped
  seed: int = 0  # example order
  prompt_style: str = "plain"  # the prompt the policy will see in train/eval
  logprob_chunk: int = 128  # sequence chunk for log-probs (memory)
  log_every: int = 1  # metrics.jsonl / TensorBoard every this many steps
  nll_examples: int = 64  # examples whose target NLL is reported before/after (0: off)
  cccs_stages: bool = True  # also one example per CCCS stage prefix (runs/sft.py)
  # Early stopping on validation NLL (only with validation problems, `sft --val_problems`):
  # `steps` is then the maximum; the saved model is the one of the best evaluation.
  eval_every: int = 10  # validation NLL every this many steps (and at the end)
  patience: int = 0  # evaluations without improvement before stopping; 0: never
  min_delta: float = 0.0  # the NLL drop that counts as an improvement
  # Resume after a kill (runs/sft_checkpoint.py): with --out, an orbax checkpoint of the loop
  # under <out>/checkpoints every this many steps (and at each new best); None: eval_every;
  # 0: never.
  save_every: int | None = None
  max_prompt_tokens: int | None = None  # None: prompt.max_tokens (the question cut as in RL)

  def __post_init__(self):
    from stepcoder_jax.data.config import prompt_limit

    self.max_prompt_tokens = prompt_limit(self.max_prompt_tokens)


@gin.configurable("eval", denylist=["max_prompt_tokens"])
@dataclasses.dataclass
class EvalConfig:
  """pass@k from n samples (unbiased estimator) and greedy pass@1, by difficulty."""

  split: str = "test"  # dataset split evaluated (eval, end of train)
  num_samples: int = 1  # n; 1 with temperature 0 is greedy pass@1
  ks: tuple = (1,)  # the k of pass@k (each <= num_samples)
  temperature: float = 0.0  # 0: greedy
  top_p: float = 1.0  # nucleus sampling (1: off)
  max_new_tokens: int = 128  # longest completion
  batch_size: int = 16  # prompts per sampler call
  max_problems: int = 0  # 0: all problems of the split
  greedy: bool = True  # with temperature > 0, also one greedy sample per problem
  top_k: int = 0  # top-k sampling (0: off)
  prompt_style: str = "plain"  # "plain" | "chat", as in training
  # None: prompt.max_tokens; longer prompts are cut (question) / counted as failures
  max_prompt_tokens: int | None = None
  seed: int = 0  # sampling seed

  def __post_init__(self):
    from stepcoder_jax.data.config import prompt_limit

    self.max_prompt_tokens = prompt_limit(self.max_prompt_tokens)
