"""Light gin configs for the training loop, SFT, evaluation and the demo (no jax import)."""
import dataclasses

import gin


@gin.configurable("train")
@dataclasses.dataclass
class TrainConfig:
  """One StepCoder run: rollouts of `problems_per_iteration` x `samples_per_problem` per step."""
  work_dir: str = "runs/stepcoder"
  seed: int = 0
  num_iterations: int = 20
  problems_per_iteration: int = 8
  samples_per_problem: int = 1
  max_prompt_tokens: int = 384      # prompts are left-padded to a power-of-two bucket <= this
  max_new_tokens: int = 128
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0
  prompt_style: str = "plain"       # "plain" | "chat"
  eval_every: int = 0               # evaluate every N iterations and at the end (0: never)
  logprob_chunk: int = 128          # sequence chunk for log-probs (never [B, T, V] f32)

  def check_sampling(self) -> None:
    """Reject sampling knobs that PPO's scoring does not apply.

    Old, reference and new log-probs are scored under the model itself (temperature 1, no
    top-k/top-p). Sampling from another distribution would make PPO's ratio and KL compare
    different policies, so training samples at temperature 1 (evaluation may use any). Called by
    the trainer (not in __post_init__, where gin would add lines to the one-line error).
    """
    from stepcoder_jax.errors import UserError
    for name, value, plain in (("temperature", self.temperature, 1.0), ("top_p", self.top_p, 1.0),
                               ("top_k", self.top_k, 0)):
      if value != plain:
        raise UserError(f"gin train.{name}: {value!r} is not supported (training samples at "
                        f"train.{name} = {plain!r}: PPO scores log-probs under the unmodified "
                        f"policy; use eval.{name} for evaluation)")


@gin.configurable("sft")
@dataclasses.dataclass
class SFTConfig:
  """Next-token training on canonical solutions (the paper's SFT stage; the reference policy)."""
  steps: int = 30
  batch_size: int = 8
  learning_rate: float = 1e-5
  warmup_steps: int = 3
  weight_decay: float = 0.0
  max_grad_norm: float = 1.0
  max_len: int = 512
  seed: int = 0
  prompt_style: str = "plain"       # the prompt the policy will see in train/eval
  logprob_chunk: int = 128
  log_every: int = 1                # metrics.jsonl / TensorBoard every this many steps
  nll_examples: int = 64            # examples whose target NLL is reported before/after (0: off)
  cccs_stages: bool = True          # also one example per CCCS stage prefix (rl/sft.py)


@gin.configurable("eval")
@dataclasses.dataclass
class EvalConfig:
  """pass@k from n samples (unbiased estimator) and greedy pass@1, by difficulty."""
  split: str = "test"
  num_samples: int = 1              # n; 1 with temperature 0 is greedy pass@1
  ks: tuple = (1,)
  temperature: float = 0.0
  top_p: float = 1.0
  max_new_tokens: int = 128
  batch_size: int = 16
  max_problems: int = 0             # 0: all problems of the split
  greedy: bool = True               # with temperature > 0, also one greedy sample per problem
  top_k: int = 0
  prompt_style: str = "plain"
  max_prompt_tokens: int = 512      # longer prompts are cut (question) / counted as failures
  seed: int = 0
