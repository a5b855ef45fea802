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
