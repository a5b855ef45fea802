"""Reward signal options (issue 28): the adaptive CCCS schedule, dynamic sampling and the loss
options, from hand-made verdicts and hand-computed values."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepcoder_jax.data.record import Problem
from stepcoder_jax.errors import UserError
from stepcoder_jax.rl import cccs, ppo, refill, rollout
from stepcoder_jax.rl.config import CCCSConfig, PPOConfig

# Four `if`s: start points at statements 3 and 1, then s* = 0: three stages.
SOLUTION = "".join(f"x = {k}\nif x:\n  print({k})\n" for k in range(4))


def _problem(pid="p"):
  return Problem(
    id=pid,
    question="q",
    test_kind="stdio",
    canonical_solution=SOLUTION,
    inputs=["1"],
    outputs=["1"],
  )


def _curriculum(schedule):
  cur = cccs.Curriculum(CCCSConfig(rho=0.5, min_attempts=2, schedule=schedule))
  cur.register(_problem())
  return cur


# (stage the group's prompts were built at, verdicts) -> (move, stage after, attempts after)
VERDICTS = [
  (0, [True, True], (1, 1, 0)),  # 2/2 > rho: forward, both schedules
  (1, [False, False], (-1, 0, 0)),  # adaptive: the whole group failed -> back one stage
  (1, [True, True], (0, 0, 0)),  # stale (built at a stage already left): ignored
  (0, [False, False], (0, 0, 2)),  # stage 0 is the floor: no move, counted
  (0, [False, True], (0, 0, 4)),  # a mixed group never moves back; 1/4 not > rho
  (0, [True, True, True], (1, 1, 0)),  # 4/7 > rho: forward again
  (1, [True, False], (0, 1, 2)),
]


def test_adaptive_schedule_moves_back_when_a_whole_group_fails():
  cur = _curriculum("adaptive")
  for stage, verdicts, (move, after, attempts) in VERDICTS:
    assert cur.record_group("p", stage, verdicts) == move, (stage, verdicts)
    st = cur.states["p"]
    assert (st.stage, st.attempts) == (after, attempts), (stage, verdicts)
  assert cur.states["p"].retreats == 1 and cur.ignored == 2
  assert cur.histogram() == {"stage_1": 1, "final": 0, "retreats": 1}


def test_paper_schedule_is_the_per_verdict_rule_unchanged():
  grouped, single = _curriculum("paper"), _curriculum("paper")
  for stage, verdicts, _ in VERDICTS:
    grouped.record_group("p", stage, verdicts)
    for ok in verdicts:
      single.record("p", stage, ok)
    assert grouped.to_json() == single.to_json()
  st = grouped.states["p"]
  assert (st.stage, st.retreats) == (2, 0)  # never moved back: at s* = 0 after two advances
  assert "retreats" not in grouped.histogram()


def test_adaptive_state_resumes_exactly_from_its_json():
  whole = _curriculum("adaptive")
  cfg = whole.cfg
  for k, (stage, verdicts, _) in enumerate(VERDICTS):
    if k == 3:  # a checkpoint after the move back, then the rest on the restored state
      resumed = cccs.Curriculum.from_json(whole.to_json(), cfg)
      resumed.register(_problem())
    whole.record_group("p", stage, verdicts)
    if k >= 3:
      resumed.record_group("p", stage, verdicts)
  assert resumed.to_json() == whole.to_json()
  assert '"schedule": "adaptive"' in whole.to_json()


def test_unknown_schedule_is_a_user_error():
  with pytest.raises(UserError, match="gin cccs.schedule: 'bread' is not 'paper' or 'adaptive'"):
    CCCSConfig(schedule="bread")


# ----------------------------------------------------------------------------- pure ppo pieces


def test_group_signal_and_signal_fraction():
  rewards = jnp.array([1.0, 1.0, -0.3, 1.0, -1.0, -1.0, 0.0])
  group = jnp.array([0, 0, 2, 2, 4, 4, 6])  # row 6: a padding row, a group of its own
  sig = ppo.group_signal(rewards, group)
  assert sig.tolist() == [False, False, True, True, False, False, False]
  leaders = group == jnp.arange(7)
  has_resp = jnp.array([True] * 6 + [False])
  assert float(ppo.signal_fraction(sig, leaders & has_resp)) == pytest.approx(1 / 3)


def test_seq_mean_token_mean_weights_each_sequence_equally():
  mask = jnp.array([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
  loss = jnp.array([[3.0, 6.0, 9.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0] * 4])
  assert ppo.token_weights(mask, "token-mean") is None
  w = ppo.token_weights(mask, "seq-mean-token-mean")
  np.testing.assert_allclose(w[0], [2 / 3, 2 / 3, 2 / 3, 0.0], rtol=1e-6)
  # sum / N: token mean (20 / 4 = 5) against the mean of the row means ((6 + 2) / 2 = 4)
  assert float(jnp.sum(loss) / jnp.sum(mask)) == 5.0
  assert float(jnp.sum(w * loss) / jnp.sum(mask)) == pytest.approx(4.0)


def test_clip_higher_widens_only_the_upper_bound():
  old = jnp.zeros((1, 2))
  new = jnp.log(jnp.array([[1.25, 0.75]]))
  adv = jnp.array([[1.0, -1.0]])
  mask = jnp.ones((1, 2))
  sym, clip_s, _ = ppo.policy_loss_terms(new, old, adv, mask, 0.2)
  high, clip_h, _ = ppo.policy_loss_terms(new, old, adv, mask, 0.2, 0.28)
  np.testing.assert_allclose(sym, [[-1.2, 0.8]], rtol=1e-6)  # both clipped
  np.testing.assert_allclose(high, [[-1.25, 0.8]], rtol=1e-6)  # 1.25 < 1.28: not clipped
  assert clip_s.tolist() == [[1.0, 1.0]] and clip_h.tolist() == [[0.0, 1.0]]
  assert PPOConfig(clip_eps=0.2).clip_high == 0.2
  assert PPOConfig(clip_eps=0.2, clip_eps_high=0.28).clip_high == 0.28


def test_kl_goes_to_the_loss_by_default_for_critic_free_estimators_only():
  assert PPOConfig(advantage="grpo").kl_loss and PPOConfig(advantage="rloo").kl_loss
  assert not PPOConfig().kl_loss  # gae: the paper's per-token reward penalty
  assert not PPOConfig(advantage="grpo", kl_in_loss=False).kl_loss
  assert PPOConfig(kl_in_loss=True).kl_loss


def test_bad_loss_options_are_user_errors():
  with pytest.raises(UserError, match="ppo.loss_agg"):
    PPOConfig(loss_agg="sum")
  with pytest.raises(UserError, match="ppo.critic_warmup"):
    PPOConfig(critic_warmup=-1)


def test_truncated_completions_get_no_weight_only_when_asked():
  p = _problem()
  items = [
    rollout.Item(problem=p, stage=0, prompt=None, prompt_ids=[], finish=f)
    for f in ("eos", "length", "stop")
  ]
  items.append(
    rollout.Item(problem=p, stage=0, prompt=None, prompt_ids=[], finish="eos", padding=True)
  )
  assert rollout.weightless_rows(items, mask_truncated=False) == [3]
  assert rollout.weightless_rows(items, mask_truncated=True) == [1, 3]


# ----------------------------------------------------------------------------- refill pieces


def _rows(pids, rewards, padding=()):
  items = [
    rollout.Item(problem=_problem(pid), stage=0, prompt=None, prompt_ids=[], padding=i in padding)
    for i, pid in enumerate(pids)
  ]
  n = len(items)
  return rollout.RowResults(
    items=items,
    rewards=np.asarray(rewards, np.float32),
    outcomes=np.zeros(n, np.int32),
    response_len=np.ones(n, np.int32),
    fgo_tokens=np.ones(n, np.float32),
    response_tokens=np.ones(n, np.float32),
    truncated=np.zeros(n, bool),
    report=rollout.PromptReport(),
    times={"sample_s": 1.0},
  )


def test_group_slots_split_groups_by_signal_and_leave_padding_out():
  rows = _rows(["a", "a", "b", "b", "c", "c"], [1, -1, -1, -1, 1, 1], padding=(5,))
  signal, flat = refill.group_slots(rows)
  assert signal == [[0, 1]] and flat == [[2, 3], [4]]


def test_pass_signal_counts_groups_with_a_pass_and_a_fail_only():
  # a: pass + fail (signal); b: two graded failures (advantage, but no pass signal); c: padding
  rows = _rows(["a", "a", "b", "b", "c"], [1, -0.3, -0.3, -1, 1], padding=(4,))
  rows.outcomes[:] = [0, 1, 1, 4, 0]  # passed, failed, failed, compile_error, passed
  assert rows.pass_signal() == 0.5
  assert rows.metrics()["pass_signal"] == 0.5


def test_further_problems_are_new_and_drawn_from_the_iteration_alone():
  pool = [_problem(f"p{k}") for k in range(10)]
  a = refill.further_problems(pool, {"p1", "p2"}, 3, seed=0, iteration=5, round_=1)
  assert len(a) == 3 and not {"p1", "p2"} & {p.id for p in a}
  assert a == refill.further_problems(pool, {"p1", "p2"}, 3, seed=0, iteration=5, round_=1)
  assert len(refill.further_problems(pool, {p.id for p in pool[:9]}, 3, 0, 5, 1)) == 1


def test_concat_rows_keeps_every_generated_row_in_order():
  both = refill.concat_rows([_rows(["a", "a"], [1, -1]), _rows(["b", "b"], [0, 0])])
  assert [it.problem.id for it in both.items] == ["a", "a", "b", "b"]
  assert both.rewards.tolist() == [1, -1, 0, 0] and both.times == {"sample_s": 2.0}


# ----------------------------------------------------------------------------- compiled steps


def _setup(cfg, seed=0):
  from test_ppo import _batch, _tiny_models

  policy, value = _tiny_models(seed)
  batch = _batch(policy, value)
  if cfg.critic_free:
    batch = {k: v for k, v in batch.items() if k != "values"}
    batch["group"] = jnp.array([0, 0, 2, 2], jnp.int32)
    value = None
  return policy, value, batch


def _moved(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


GRPO = PPOConfig(
  advantage="grpo",
  policy_lr=1e-3,
  logprob_chunk=8,
  kl_coef=0.1,
  shuffle=False,
  max_grad_norm=0.0,
  adam_eps=1e-3,
)


@pytest.mark.slow  # two compiled steps
def test_filter_groups_drops_equal_reward_groups_from_the_update():
  policy, _, batch = _setup(GRPO)
  resp = batch["response_mask"]
  rewards = jnp.array([1.0, -0.5, -1.0, -1.0])  # group 0 has signal, group 2 does not
  batch = {**batch, "rewards": ppo.place_rewards(rewards, resp)}
  cfg = dataclasses.replace(GRPO, filter_groups=True)
  pgd, _, state = ppo.init_train_state(policy, None, cfg)
  filtered = ppo.make_ppo_step(pgd, None, cfg, donate=False)
  new, met = filtered(state, ppo.Batch.of(batch))
  assert float(met["signal_fraction"]) == 0.5 and int(met["groups_dropped"]) == 1
  assert int(met["rows_trained"]) == 2
  # The same as the unfiltered step on a batch whose dropped rows have no response at all.
  keep = jnp.array([1.0, 1.0, 0.0, 0.0])[:, None]
  by_hand = {
    **batch,
    "response_mask": resp * keep,
    "fgo_mask": batch["fgo_mask"] * keep,
    "old_logprobs": batch["old_logprobs"] * keep,
    "ref_logprobs": batch["ref_logprobs"] * keep,
  }
  pgd, _, state = ppo.init_train_state(policy, None, GRPO)
  want, wmet = ppo.make_ppo_step(pgd, None, GRPO, donate=False)(state, ppo.Batch.of(by_hand))
  np.testing.assert_allclose(met["policy_loss"], wmet["policy_loss"], rtol=1e-5, atol=1e-7)
  assert _moved(new.policy, want.policy) < 1e-6 and _moved(new.policy, state.policy) > 1e-5
  # A batch with no signal at all leaves the policy (and Adam's state) alone.
  flat = {**batch, "rewards": ppo.place_rewards(jnp.full(4, -1.0), resp)}
  same, fmet = filtered(state, ppo.Batch.of(flat))
  assert float(fmet["signal_fraction"]) == 0.0 and _moved(same.policy, state.policy) == 0.0


def test_critic_warmup_trains_the_value_only_and_grad_clipped_counts_clipping():
  from test_ppo import BASE

  cfg = dataclasses.replace(BASE, critic_warmup=1, max_grad_norm=1e-6)
  policy, value, batch = _setup(cfg)
  pgd, vgd, state = ppo.init_train_state(policy, value, cfg)
  step = ppo.make_ppo_step(pgd, vgd, cfg, donate=False)
  s1, m1 = step(state, ppo.Batch.of(batch))
  assert _moved(s1.policy, state.policy) == 0.0 and _moved(s1.value, state.value) > 1e-5
  assert float(m1["policy_frozen"]) == 1.0 and float(m1["grad_clipped"]) == 1.0
  s2, m2 = step(s1, ppo.Batch.of(batch))
  assert _moved(s2.policy, s1.policy) > 0.0 and float(m2["policy_frozen"]) == 0.0
  assert 0.0 < float(m2["signal_fraction"]) <= 1.0


# ----------------------------------------------------------------------------- the measurement


def test_signal_arms_plan_from_configs_signal_and_probe_the_latest_start_point(tmp_path):
  from stepcoder_jax.ablation import plan as ablation_plan

  s = ablation_plan.Settings(
    out=tmp_path, arms=("adaptive_s1",), arm_dir="signal", gin_files=("signal/experiment_tiny.gin",)
  )
  stages = {st.name: st for st in ablation_plan.plan(s)}
  train = stages["train_adaptive_s1"].argv
  assert any(a.endswith("configs/signal/adaptive_s1.gin") for a in train)
  assert "--subtask" in stages["eval_adaptive_s1_probe"].argv
  default = ablation_plan.Settings(out=tmp_path, arms=("ppo",))
  assert (
    "--subtask" not in {st.name: st for st in ablation_plan.plan(default)}["eval_ppo_probe"].argv
  )  # the published ablation's stages are unchanged
  with pytest.raises(UserError, match="no configs/signal/<arm>.gin for ppo"):
    ablation_plan.check_settings(dataclasses.replace(s, arms=("ppo",)))


def _metrics(out, run, rows):
  import json

  d = out / "arms" / run / "train"
  d.mkdir(parents=True)
  (d / "metrics.jsonl").write_text(
    "".join(json.dumps({"step": k + 1, **r}) + "\n" for k, r in enumerate(rows))
  )


def test_signal_summary_pairs_arms_by_seed_and_iteration(tmp_path):
  from stepcoder_jax.ablation import signal

  rows = lambda *fs: [{"ppo/signal_fraction": f, "pass_rate": f / 2} for f in fs]
  _metrics(tmp_path, "paper_s0", rows(0.0, 0.5))
  _metrics(tmp_path, "paper_s1", rows(0.5, 0.5))
  _metrics(tmp_path, "adaptive_s0", rows(0.5, 1.0))
  _metrics(tmp_path, "adaptive_s1", rows(1.0, 1.0))
  assert signal.split_runs(["paper_s0", "adaptive_s1", "x"]) == {
    "paper": {0: "paper_s0"},
    "adaptive": {1: "adaptive_s1"},
  }
  text = signal.summary(tmp_path, ["paper_s0", "paper_s1", "adaptive_s0", "adaptive_s1"])
  # adaptive - paper: +0.5 at every (seed, iteration): +50 pp, an interval of one point
  line = next(l for l in text.splitlines() if l.startswith("| adaptive - paper |"))
  assert line.split("|")[2].strip() == "+50.0 [+50.0, +50.0] *"
  assert "| paper | 2 | 0.375" in text  # mean signal fraction of paper over 4 iterations


def _probe(out, model, records, subtask):
  import json

  d = out / "evals" / model / "probe"
  d.mkdir(parents=True)
  (d / "DONE.json").write_text("{}")
  (d / "eval.json").write_text(json.dumps({"problems": records}))
  (d / "eval_subtask.json").write_text(json.dumps({"problems": subtask}))


def test_signal_summary_pool_tables_pair_each_problem_with_sft(tmp_path):
  from stepcoder_jax.ablation import signal

  def recs(passed, shares):
    return [
      {"problem_id": f"p{k}", "greedy_passed": bool(p), "tests_share": s}
      for k, (p, s) in enumerate(zip(passed, shares))
    ]

  # p3 has no curriculum: its subtask record is all None and is left out of the subtask columns
  no_stage = {"problem_id": "p3", "subtask_passed": None, "tests_share": None}
  sub = lambda passed, shares: (
    [
      {"problem_id": f"p{k}", "subtask_passed": bool(p), "tests_share": s}
      for k, (p, s) in enumerate(zip(passed, shares))
    ]
    + [no_stage]
  )
  _probe(tmp_path, "sft", recs([0, 0, 0, 1], [0, 0.5, 0, 1]), sub([0, 0, 1], [0, 0.5, 1]))
  _probe(tmp_path, "paper_s0", recs([1, 1, 0, 1], [1, 1, 0.5, 1]), sub([1, 0, 1], [1, 0.5, 1]))
  _metrics(tmp_path, "paper_s0", [{"ppo/signal_fraction": 0.5}])
  text = signal.summary(tmp_path, ["paper_s0"])
  assert "| sft | 25.0 [" in text  # SFT's level: 1 of 4 pass at s* = 0
  line = next(l for l in text.splitlines() if l.startswith("| paper |") and "+" in l)
  cells = [c.strip() for c in line.split("|")[2:6]]
  assert cells[0].startswith("+50.0 [")  # 2 of 4 problems went from fail to pass
  assert cells[1].startswith("+33.3 [")  # subtask: 1 of the 3 with a curriculum
  assert cells[2].startswith("+50.0 [")  # tests share: (+1 +0.5 +0.5 +0) / 4
  assert cells[3].startswith("+33.3 [")  # subtask tests share: (+1 + 0 + 0) / 3


def _batch_of(marker, rewards):
  """A critic-free Batch whose row i holds tokens marker + i (to see where rows went)."""
  n = len(rewards)
  tokens = np.repeat(marker + np.arange(n, dtype=np.int32)[:, None], 8, axis=1)
  ones = np.ones((n, 8), np.float32)
  return ppo.Batch.of(
    {
      "tokens": tokens,
      "positions": tokens * 0,
      "attention_mask": ones,
      "response_mask": ones,
      "fgo_mask": ones,
      "old_logprobs": ones * 0,
      "ref_logprobs": ones * 0,
      "rewards": np.asarray(rewards, np.float32),
      "group": np.arange(n) // 2 * 2,
    }
  )


class _Served:
  """Stands in for `Rollout` in `refill.refill`: its placement and config, and `collect`
  serving prepared rewards (groups of 2) for the problems it is asked for, one round at a time."""

  def __init__(self, rounds):
    from stepcoder_jax import sharding
    from stepcoder_jax.config import MeshConfig
    from stepcoder_jax.rl import spmd

    mesh = sharding.make_mesh(MeshConfig())
    self.placement = spmd.Placement(
      mesh=mesh, rules=sharding.make_rules(MeshConfig().rules), state=None, ref=None
    )
    self.ppo_cfg = dataclasses.replace(GRPO, filter_groups=True, max_refill_rounds=2)
    self.rounds, self.asked = list(rounds), []

  def collect(self, state, problems, rng, fixed_columns=False):
    assert fixed_columns  # merged rounds must share the prompt columns
    self.asked.append([p.id for p in problems])
    rewards = self.rounds.pop(0)
    marker = 100 * (len(self.asked))
    return _batch_of(marker, rewards), _rows([p.id for p in problems for _ in range(2)], rewards)


def test_refill_puts_groups_with_signal_into_the_rows_of_dropped_ones():
  pool = [_problem(f"p{k}") for k in range(6)]
  drawn = pool[:2]
  served = _Served([[-1.0, -1.0], [0.5, -1.0]])  # round 1: no signal either; round 2: some
  batch = _batch_of(0, [1.0, -0.5, -1.0, -1.0])  # p0 has signal, p1 does not
  rows = _rows(["p0", "p0", "p1", "p1"], [1.0, -0.5, -1.0, -1.0])
  merged, every, counts = refill.refill(
    served, None, batch, rows, pool, drawn, rounds=2, seed=0, iteration=3
  )
  assert counts == {"refill/rounds": 2, "refill/groups_refilled": 1, "refill/rows_generated": 4}
  assert np.asarray(merged.tokens)[:, 0].tolist() == [0, 1, 200, 201]  # round 2's rows 0, 1
  assert np.asarray(merged.rewards).tolist() == [1.0, -0.5, 0.5, -1.0]
  assert np.asarray(merged.group).tolist() == [0, 0, 2, 2]  # the slot keeps its group id
  assert len(every.items) == 8  # every generated row is recorded and counted
  asked = [q for r in served.asked for q in r]
  assert len(asked) == 2 and not {"p0", "p1"} & set(asked) and len(set(asked)) == 2


def test_signal_plan_runs_training_and_probes_before_the_held_out_evaluations(tmp_path):
  """The signal measurement's stages are the ablation's, reordered: its main result (training
  metrics and the pool probes) comes before the held-out evaluations, seed 0's arms first."""
  from stepcoder_jax.ablation import plan as ablation_plan

  arms = ("nocccs_s0", "adaptive_s0", "nocccs_s1")
  s = ablation_plan.Settings(out=tmp_path, arms=arms, arm_dir="signal")
  names = [st.name for st in ablation_plan.plan(s)]
  evals = [f"eval_{m}_{k}" for m in ("base", "sft", *arms) for k in ("greedy", "sampled", "probe")]
  steps = [f"{k}_{a}" for a in arms for k in ("train", "export")]
  assert sorted(names) == sorted(["sft", *evals, *steps])  # the ablation's stages, no others
  heldout = [i for i, n in enumerate(names) if n.endswith(("_greedy", "_sampled"))]
  judged = [i for i, n in enumerate(names) if n.startswith(("train_", "export_")) or "probe" in n]
  assert names[0] == "sft" and max(i for i in judged if "base" not in names[i]) < min(heldout)
  trains = [n for n in names if n.startswith("train_")]
  assert trains == [f"train_{a}" for a in arms]
