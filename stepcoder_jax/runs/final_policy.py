"""The policy a training run ends with, as an HF directory with its provenance.

`train` (runs/pipeline.py) writes it to <work_dir>/model, so that `eval`, `export` and
`generate` take it as it is; the provenance (models/model_card.py) lets `export` write a model
card saying what the model was made from and how.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stepcoder_jax.models import model_card
from stepcoder_jax.rl.config import FGOConfig

_log = logging.getLogger(__name__)


def final_model_dir(work_dir: str | Path) -> Path:
  """Where `train` writes its final policy as an HF directory."""
  return Path(work_dir) / "model"


def save(trainer, tokenizer, parent: str | None = None, data: str | None = None) -> Path | None:
  """Write the trained policy to <work_dir>/model (what `eval`, `export` and `generate` read).

  On a multi-host run the parameters are spread over the hosts: the directory is not written
  (export the checkpoint instead, `export --model <work_dir>`), and None is returned."""
  import jax

  from stepcoder_jax.runs import sft

  if jax.process_count() > 1:
    _log.info(
      "multi-host run: export the final checkpoint with "
      "`stepcoder-jax export --model %s --out DIR`",
      trainer.cfg.work_dir,
    )
    return None
  out = sft.save(trainer.policy_model(), tokenizer, final_model_dir(trainer.cfg.work_dir))
  model_card.write_provenance(out, **provenance(trainer, parent, data))
  return out


def provenance(trainer, parent: str | None, data: str | None) -> dict:
  """The model card's account of an RL run: where it started, on what, with which settings."""
  t, p = trainer.cfg, trainer.ppo_cfg
  cccs, fgo_on = trainer.cccs_cfg.enabled, FGOConfig().enabled
  name = (
    ("PPO" if p.advantage == "gae" else p.advantage.upper())
    + (" + CCCS" if cccs else "")
    + (" + FGO" if fgo_on else "")
  )
  if name == "PPO + CCCS + FGO":
    name = "StepCoder (PPO + CCCS + FGO)"
  base = model_card.read_provenance(parent).get("base_model") if parent else None
  return {
    "base_model": base or parent,
    "parent": parent if base else None,
    "data": data,
    "method": f"{name} on unit-test rewards (stepcoder_jax train), "
    f"{trainer.iteration} iteration{'' if trainer.iteration == 1 else 's'}",
    "settings": {
      "train.num_iterations": t.num_iterations,
      "train.problems_per_iteration": t.problems_per_iteration,
      "train.samples_per_problem": t.samples_per_problem,
      "train.max_new_tokens": t.max_new_tokens,
      "ppo.advantage": p.advantage,
      "ppo.policy_lr": p.policy_lr,
      "ppo.kl_coef": p.kl_coef,
      "cccs.enabled": cccs,
      "fgo.enabled": fgo_on,
    },
  }
