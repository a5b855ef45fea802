"""Dynamic sampling's refill (`ppo.filter_groups` with `ppo.max_refill_rounds` > 0).

A group whose outcome rewards are all equal has no advantage; the PPO step drops it
(`ppo.group_signal`). With refills, up to `max_refill_rounds` further rollouts of problems not yet
drawn this iteration are collected with the same policy, and their groups that do carry signal take
the rows of the dropped groups, so the update sees more groups with signal at the same compiled
shapes (veRL's `algorithm.filter_groups` with `max_num_gen_batches`, DAPO's dynamic sampling). A
refilled group takes exactly the rows of the one it replaces, so the group ids stay valid.

Every generated row counts for the curriculum and the rollout metrics (`concat_rows`: the first
rollout's rows, then each refill's), only the merged batch is trained on. The further problems are
drawn from (seed, iteration, round) alone, so a resumed run repeats them.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stepcoder_jax.data.record import Problem
from stepcoder_jax.rl import ppo, spmd
from stepcoder_jax.rl.rollout import PromptReport, RowResults, group_ids


def group_slots(rows: RowResults) -> tuple[list[list[int]], list[list[int]]]:
  """(with signal, without): the row indexes of each real group, split by whether its outcome
  rewards differ (the host twin of `ppo.group_signal`)."""
  groups: dict[int, list[int]] = {}
  for i, (g, item) in enumerate(zip(group_ids(rows.items), rows.items)):
    if not item.padding:
      groups.setdefault(int(g), []).append(i)
  signal, flat = [], []
  for idx in groups.values():
    r = rows.rewards[idx]
    (signal if r.max() > r.min() else flat).append(idx)
  return signal, flat


def further_problems(
  problems: Sequence[Problem], used: set[str], n: int, seed: int, iteration: int, round_: int
) -> list[Problem]:
  """Up to `n` problems not in `used`, drawn from (seed, iteration, round) alone."""
  rest = [p for p in problems if p.id not in used]
  rng = np.random.default_rng([seed, iteration, 1000 + round_])
  idx = rng.choice(len(rest), size=min(n, len(rest)), replace=False) if rest else []
  return [rest[i] for i in idx]


def concat_rows(parts: Sequence[RowResults]) -> RowResults:
  """The rows of several rollouts as one RowResults, in order (for recording and metrics)."""
  if len(parts) == 1:
    return parts[0]
  cat = {
    f.name: np.concatenate([getattr(p, f.name) for p in parts])
    for f in dataclasses.fields(RowResults)
    if f.name not in ("items", "report", "times", "prompt_len")
  }
  if len({p.prompt_len for p in parts}) != 1:
    raise ValueError("concat_rows: rollouts with different prompt columns cannot be merged")
  report = PromptReport(
    skipped=[q for p in parts for q in p.report.skipped],
    shortened=sum(p.report.shortened for p in parts),
    stages_passed_over=sum(p.report.stages_passed_over for p in parts),
  )
  times: dict[str, float] = {}
  for p in parts:
    for k, v in p.times.items():
      times[k] = times.get(k, 0.0) + v
  return RowResults(
    items=[it for p in parts for it in p.items],
    report=report,
    times=times,
    prompt_len=parts[0].prompt_len,
    **cat,
  )


def _take_rows(a: ppo.Batch, b: ppo.Batch, idx: jax.Array) -> ppo.Batch:
  """Rows `idx` of a then b; the group ids stay a's (a refilled group keeps its slot's id)."""
  out = jax.tree.map(lambda x, y: jnp.take(jnp.concatenate([x, y]), idx, axis=0), a, b)
  return out.replace(group=a.group)


_TAKES: dict[int, object] = {}


def _take_fn(rollout):
  """`_take_rows` jitted onto the batch shardings of `rollout`'s placement (cached per rollout)."""
  fn = _TAKES.get(id(rollout))
  if fn is None:
    fn = _TAKES[id(rollout)] = jax.jit(
      _take_rows, out_shardings=rollout.placement.batch_shardings(rollout.ppo_cfg)
    )
  return fn


def refill(
  rollout,
  state: ppo.TrainState,
  batch: ppo.Batch,
  rows: RowResults,
  problems: Sequence[Problem],
  drawn: Sequence[Problem],
  *,
  rounds: int,
  seed: int,
  iteration: int,
) -> tuple[ppo.Batch, RowResults, dict[str, int]]:
  """Replace the rows of `batch`'s groups without signal by groups with signal from up to
  `rounds` further rollouts (`drawn`: this iteration's problems; `problems`: the training pool).

  Returns the merged batch (same shapes and group ids), every row generated (`concat_rows`)
  and counts: 'refill/rounds', 'refill/groups_refilled', 'refill/rows_generated'.
  """
  _, flat = group_slots(rows)
  free = list(flat)  # the rows of each dropped group, in row order
  parts, used = [rows], {p.id for p in drawn}
  n0 = int(batch.tokens.shape[0])
  offset, idx = n0, np.arange(n0)
  stats = {"refill/rounds": 0, "refill/groups_refilled": 0, "refill/rows_generated": 0}
  for r in range(1, rounds + 1):
    if not free:
      break
    extra = further_problems(problems, used, len(free), seed, iteration, r)
    if not extra:
      break
    used.update(p.id for p in extra)
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), iteration), 1000 + r)
    more, more_rows = rollout.collect(state, extra, rng, fixed_columns=True)
    parts.append(more_rows)
    stats["refill/rounds"] += 1
    stats["refill/rows_generated"] += int(more_rows.real.sum())
    good, _ = group_slots(more_rows)
    taken = []
    for src in good:
      fit = next((k for k, slot in enumerate(free) if len(slot) == len(src)), None)
      if fit is None:
        continue
      slot = free.pop(fit)
      idx[slot] = offset + np.asarray(src)
      taken.append(src)
      stats["refill/groups_refilled"] += 1
    if taken:
      rep = rollout.placement.replicated
      batch = _take_fn(rollout)(batch, more, spmd.to_global(idx.astype(np.int32), rep))
      idx, offset = np.arange(n0), n0  # the merged batch is the new base
  return batch, concat_rows(parts), stats
