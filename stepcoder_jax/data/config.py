"""Light gin-configurable dataclasses (no jax import)."""

import dataclasses

import gin


@gin.configurable('dataset')
@dataclasses.dataclass
class DatasetConfig:
  """Which TFDS dataset to train/evaluate on and where its files are.

  Attributes:
    name: a builder of stepcoder_jax.data.builders (apps_plus, apps, humaneval, mbpp,
      stepcoder_builtin).
    train_split: split used for training (RL/SFT).
    eval_split: split used for evaluation.
    data_dir: where TFDS keeps built datasets; None means CACHE/tfds, CACHE being
      $STEPCODER_JAX_CACHE or ~/.cache/stepcoder_jax (stepcoder_jax.cache).
    manual_dir: where manually downloaded files are (APPS+ data.json, APPS, HumanEval, MBPP);
      each builder looks in MANUAL_DIR/<name>/ then MANUAL_DIR/. None means
      DATA_DIR/downloads/manual.
  """

  name: str = "stepcoder_builtin"
  train_split: str = "train"
  eval_split: str = "test"
  data_dir: str | None = None
  manual_dir: str | None = None


@gin.configurable('prompt')
@dataclasses.dataclass
class PromptConfig:
  """The one prompt limit of a run: training, evaluation and SFT read it (not their own).

  Attributes:
    max_tokens: a prompt (question, format note, code prefix) is at most this many tokens; a
      longer one gets a shorter question (`data.prompts.fit_prompt`, the same cut everywhere).
      Training pads its prompt arrays to a power-of-two bucket, but never lengthens a prompt.
  """

  max_tokens: int = 512

  def __post_init__(self):
    from stepcoder_jax.errors import UserError

    if self.max_tokens < 8:
      raise UserError(f"gin prompt.max_tokens: {self.max_tokens} must be >= 8")


def prompt_limit(given: int | None) -> int:
  """`given` (a caller's explicit limit), else gin's prompt.max_tokens."""
  return PromptConfig().max_tokens if given is None else int(given)
