"""Evaluation: sample n completions per problem, judge them, report pass@k and greedy pass@1.

Each problem's prompt is `prompts.fit_prompt(problem, prefix='')` (the question plus the starter
code, as in RL at the last curriculum stage s* = 0, within the run's one limit prompt.max_tokens,
the question cut as training cuts it). The sampler completes it; the response is cut by
`completion.cut` (EOS, the style's stop strings, special tokens dropped), the same function
training uses, and the program judged is `code_prefix + completion`, exactly as in training
(`execution.Job(problem, completion, prefix=code_prefix)`).

Samples: with temperature 0 the n samples would be identical, so one greedy sample is drawn and
it is both the n = 1 sample set and the greedy pass@1 verdict. With temperature > 0, n samples
give pass@k (unbiased estimator, `stepcoder_jax.passk`) for every requested k <= n, and (when
`cfg.greedy`) one extra greedy sample per problem gives greedy pass@1.

A prompt that cannot fit `cfg.max_prompt_tokens` (even with a shortened question) is not
sampled; its samples count as failures (outcome 'prompt_too_long'), so a long-prompt problem
lowers the score instead of silently leaving the denominator.

Held-out measures that move before whole-problem pass rates do (a small model sits near zero):

- tests passed: per problem, the share of its unit tests passed (tests_passed / tests_total) by
  the greedy sample when there is one, else the mean over the n samples; the table's
  "tests passed" column is its mean by difficulty.
- the last-start-point subtask (`subtask=True`, `eval --subtask`): for each problem with a CCCS
  curriculum under `cccs.statements`, the prompt carries the canonical solution up to its LAST
  start point (stage 0 in training order, the easiest: the longest prefix), built by the
  trainer's own `prompts.fit_prompt` and judged as `Job(prefix=code_prefix)` like a training row
  at that stage; the model completes the rest greedily (n = 1, temperature 0). A problem
  without a curriculum (no counted conditional statement) is excluded: it is not sampled, its
  record has `subtask_passed` None, and the table covers the other problems
  (`settings.subtask_excluded` counts them).

Outputs (when `out_dir` is given): `<name>.md` and `<name>.json` (the table by difficulty, the
settings and the per-problem records) and `<name>_samples.jsonl` (one line per judged sample).
With `resume=True` (the `eval` command), `<name>.journal.jsonl` holds the sampled batches while
the evaluation runs, so a killed one resumes (runs/eval_journal.py); it is deleted at the end.
The `<name>.json` layout, for pairing models problem by problem:

    {"table": {difficulty: {"problems", "pass@k"..., "greedy pass@1", "tests passed"}, ...,
               "all": {...}},
     "settings": {"config": EvalConfig, "n", "ks", "extra_greedy_sample", "problems",
                  "prompt_too_long", "mode": "problem" | "subtask",
                  subtask only: "statements", "subtask_excluded", "subtask_excluded_ids"},
     "problems": [{"problem_id", "difficulty", "n", "c" (samples passing every test),
                   "greedy_passed" (bool | null), "tests_share" (float in [0, 1] | null),
                   subtask only: "subtask_passed" (bool | null: no curriculum)}, ...]}

In the subtask output `tests_share` is the subtask completion's share, and an excluded problem
has n = c = 0 and nulls.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from stepcoder_jax import completion
from stepcoder_jax import passk as eval_lib
from stepcoder_jax.data import prompts as prompts_lib
from stepcoder_jax.data.record import Problem
from stepcoder_jax.runs import eval_journal
from stepcoder_jax.runs.config import EvalConfig

_log = logging.getLogger(__name__)

PROMPT_TOO_LONG = "prompt_too_long"

# (problem, prompt, sample index) -> raw completion text; replaces the sampler (tests, baselines).
CompletionFn = Callable[[Problem, prompts_lib.PromptParts, int], str]


@dataclasses.dataclass
class EvalReport:
  """What `evaluate` measured.

  Attributes:
    table: {difficulty: {"problems", "pass@k"..., "greedy pass@1"}}, "all" last (eval.aggregate).
    problems: per problem, n samples, c passing and the tests share (ProblemResult); in
      subtask mode a problem without a curriculum has n = 0.
    samples: one dict per judged sample (problem_id, difficulty, sample, greedy, completion,
      outcome, reward, tests_passed, tests_total, error).
    settings: the EvalConfig used and the effective n and ks.
  """

  table: dict[str, dict]
  problems: list[eval_lib.ProblemResult]
  samples: list[dict]
  settings: dict

  def pass_at(self, k: int, group: str = eval_lib.ALL) -> float | None:
    return self.table.get(group, {}).get(f"pass@{k}")

  def greedy_pass_at_1(self, group: str = eval_lib.ALL) -> float | None:
    return self.table.get(group, {}).get("greedy pass@1")

  def metrics(self) -> dict[str, float]:
    """Flat scalars for a metrics log: '<difficulty>/pass@k', '<difficulty>/greedy_pass@1',
    '<difficulty>/tests_passed'."""
    out = {}
    for group, row in self.table.items():
      for col, v in row.items():
        if col != "problems" and v is not None:
          out[f"{group}/{col.replace(' ', '_')}"] = float(v)
    return out


def effective_samples(cfg: EvalConfig) -> tuple[int, tuple[int, ...], bool]:
  """(n sampled per problem, ks reported, whether an extra greedy sample is drawn)."""
  greedy_only = cfg.temperature <= 0.0
  n = 1 if greedy_only else max(1, int(cfg.num_samples))
  if greedy_only and cfg.num_samples > 1:
    _log.warning("eval: temperature 0 gives identical samples; drawing n = 1 (greedy)")
  ks = tuple(sorted({int(k) for k in cfg.ks if 0 < int(k) <= n})) or (1,)
  dropped = sorted({int(k) for k in cfg.ks} - set(ks))
  if dropped:
    _log.warning("eval: pass@k for k = %s needs n >= k; n = %d, not reported", dropped, n)
  return n, ks, (cfg.greedy and not greedy_only)


Row = tuple[int, list[int], prompts_lib.PromptParts]  # (row id, prompt ids, prompt)


def sampled_texts(tokenizer, res, rows: Sequence[Row], eos_ids: Sequence[int]) -> dict[int, str]:
  """The judged text of each sampled row (`res`: a SampleOutput whose row i is rows[i]), cut by
  `completion.cut` exactly as training cuts its rollouts, so a sample is judged alike in both."""
  out = {}
  for i, (row_id, prompt_ids, parts) in enumerate(rows):
    toks = res.tokens[i, : int(res.lengths[i])]
    out[row_id] = completion.cut(
      tokenizer, toks, parts.stop, eos_ids, context=parts.text, lead=prompt_ids[-1]
    ).text
  return out


def _sample(
  model,
  tokenizer,
  rows: list[Row],
  cfg: EvalConfig,
  temperature: float,
  seed: int,
  journal: eval_journal.Journal | None = None,
  phase: str = "temperature",
) -> Iterator[dict[int, str]]:
  """Completion texts of (row id, prompt ids, prompt) rows, one dict per sampler batch.

  Batches have a fixed size (the last one padded by repetition) and share one prompt bucket, so
  the sampler compiles once per temperature. Yielding per batch lets the caller start judging a
  batch while the next one is sampled. With a journal, a batch it holds (under `phase`) is
  replayed instead of sampled, and each newly sampled batch is recorded in it.
  """
  import jax

  from stepcoder_jax import sampling
  from stepcoder_jax.models.config import SamplingConfig

  if not rows:
    return
  eos, pad = sampling.special_ids(model.cfg, tokenizer)
  longest = max(len(ids) for _, ids, _ in rows)
  scfg = SamplingConfig(
    temperature=temperature,
    top_p=cfg.top_p if temperature > 0 else 1.0,
    top_k=cfg.top_k if temperature > 0 else 0,
    max_new_tokens=cfg.max_new_tokens,
    min_prompt_bucket=sampling.bucket(longest, 16),
  )
  bs = max(1, min(cfg.batch_size, len(rows)))
  key = jax.random.key(seed)
  batches = range(0, len(rows), bs)
  for b, start in enumerate(batches):
    done = journal.get(phase, b) if journal is not None else None
    if done is not None:
      yield done
      continue
    chunk = rows[start : start + bs]
    ids = [r[1] for r in chunk] + [chunk[0][1]] * (bs - len(chunk))
    res = sampling.generate_ids(model, ids, scfg, jax.random.fold_in(key, b), eos, pad)
    texts = sampled_texts(tokenizer, res, chunk, eos)
    if journal is not None:
      journal.record(phase, b, texts)
      _log.info("eval: sampled %s batch %d of %d", phase, b + 1, len(batches))
    yield texts


def problem_prompts(
  problems: Sequence[Problem], tokenizer, cfg: EvalConfig
) -> list[tuple[prompts_lib.PromptParts, list[int]] | None]:
  """The s* = 0 prompt (question + starter code) of each problem and its ids, fitted into
  `cfg.max_prompt_tokens` as training fits it (`prompts.fit_prompt`); None when it cannot fit
  (its samples then count as failures)."""
  out = []
  for p in problems:
    fit = prompts_lib.fit_prompt(p, "", tokenizer, cfg.prompt_style, cfg.max_prompt_tokens)
    out.append(None if fit is None else fit[:2])
  return out


def subtask_prefix(problem: Problem, statements: str) -> str | None:
  """The canonical solution up to the problem's last CCCS start point (its first stage in
  training order, the longest prefix); None when it has no curriculum (s* = 0 alone)."""
  from stepcoder_jax.rl.cccs import Curriculum
  from stepcoder_jax.rl.config import CCCSConfig

  cur = Curriculum(CCCSConfig(enabled=True, statements=statements))
  if cur.register(problem).num_stages < 2:
    return None
  return cur.prefix_at(problem, 0)


def subtask_prompts(
  problems: Sequence[Problem], tokenizer, cfg: EvalConfig, statements: str
) -> tuple[list[tuple[prompts_lib.PromptParts, list[int]] | None], set[int]]:
  """(prompt per problem as `problem_prompts` gives it, indexes of problems without a
  curriculum). The prompt is the trainer's own (`prompts.fit_prompt`) at the subtask's stage, so
  the question is shortened exactly as in training; None also when it cannot fit."""
  out, excluded = [], set()
  for i, p in enumerate(problems):
    prefix = subtask_prefix(p, statements)
    if prefix is None:
      excluded.add(i)
      out.append(None)
      continue
    fit = prompts_lib.fit_prompt(p, prefix, tokenizer, cfg.prompt_style, cfg.max_prompt_tokens)
    out.append(None if fit is None else fit[:2])
  return out, excluded


def tests_share(rows: Sequence[dict]) -> float:
  """Mean share of unit tests passed over judged sample rows (0 for a problem without tests)."""
  return sum(r["tests_passed"] / r["tests_total"] if r["tests_total"] else 0.0 for r in rows) / max(
    1, len(rows)
  )


def evaluate(
  model,
  tokenizer,
  problems: Sequence[Problem],
  cfg: EvalConfig,
  pool,
  *,
  out_dir: str | Path | None = None,
  name: str = "eval",
  completion_fn: CompletionFn | None = None,
  progress: bool = False,
  subtask: bool = False,
  statements: str = "if",
  resume: bool = False,
) -> EvalReport:
  """pass@k (n samples), greedy pass@1 and tests passed of `model` on `problems`, by difficulty.

  Args:
    model: a Decoder (unused when `completion_fn` is given).
    tokenizer: its tokenizer (prompts are built and encoded with it).
    problems: the problems; `cfg.max_problems` > 0 keeps the first that many.
    cfg: EvalConfig.
    pool: a started execution.ExecutionPool (`submit(jobs)` -> a future of list[ExecResult]).
    out_dir: where to write the tables and the per-sample JSONL; None writes nothing.
    name: file name prefix of the outputs (e.g. 'eval_step100' during training).
    completion_fn: replaces the sampler: (problem, prompt, sample index) -> completion text,
      cut at the prompt's stop strings like a sampled one. Sample index n means the greedy sample.
    progress: log the judging progress.
    subtask: evaluate the last-start-point subtask instead (module docstring): greedy only, on
      the problems that have a curriculum under `statements` (gin `cccs.statements`).
    statements: which statements start CCCS subtasks ('if' or 'branching').
    resume: keep a sampling journal in `out_dir` (runs/eval_journal.py): a rerun of the same
      evaluation after a kill samples only the batches the killed run did not finish.
  """
  from stepcoder_jax.execution.job import Job

  problems = list(problems)
  if cfg.max_problems > 0:
    problems = problems[: cfg.max_problems]
  excluded: set[int] = set()
  if subtask:
    cfg = dataclasses.replace(cfg, temperature=0.0, num_samples=1, ks=(1,))
    fits, excluded = subtask_prompts(problems, tokenizer, cfg, statements)
    if excluded:
      _log.info(
        "eval: %d of %d problems have no CCCS subtask (%s statements), excluded",
        len(excluded),
        len(problems),
        statements,
      )
  else:
    fits = problem_prompts(problems, tokenizer, cfg)
  n, ks, extra_greedy = effective_samples(cfg)
  per_problem = n + int(extra_greedy)
  prompts = [f[0] if f else None for f in fits]
  prompt_ids = [f[1] if f else None for f in fits]
  too_long = {i for i, f in enumerate(fits) if f is None and i not in excluded}
  if too_long:
    _log.warning(
      "eval: %d prompt(s) longer than %d tokens count as failures: %s",
      len(too_long),
      cfg.max_prompt_tokens,
      ", ".join(problems[i].id for i in sorted(too_long)[:5]),
    )

  # Row id = problem index * per_problem + sample index (sample n is the extra greedy one).
  journal = None
  sampled = [i for i in range(len(problems)) if fits[i] is not None]
  if completion_fn is not None:
    chunks: Iterable[dict[int, str]] = [
      {
        i * per_problem + s: prompts_lib.strip_stop(
          completion_fn(problems[i], prompts[i], s), prompts[i].stop
        )
        for i in sampled
        for s in range(per_problem)
      }
    ]
  else:
    temp_rows = [
      (i * per_problem + s, prompt_ids[i], prompts[i]) for i in sampled for s in range(n)
    ]
    greedy_rows = (
      [(i * per_problem + n, prompt_ids[i], prompts[i]) for i in sampled] if extra_greedy else []
    )
    if resume and out_dir is not None:
      key = eval_journal.fingerprint(
        model,
        {"config": dataclasses.asdict(cfg), "subtask": subtask, "statements": statements},
        [(r[0], r[1]) for r in temp_rows + greedy_rows],
      )
      journal = eval_journal.Journal(Path(out_dir) / f"{name}.journal.jsonl", key)
    chunks = itertools.chain(
      _sample(
        model,
        tokenizer,
        temp_rows,
        cfg,
        max(cfg.temperature, 0.0),
        cfg.seed,
        journal,
        "temperature",
      ),
      _sample(model, tokenizer, greedy_rows, cfg, 0.0, cfg.seed, journal, "greedy"),
    )

  # Judge each chunk as soon as it is sampled: the pool works while the sampler runs.
  completions: dict[int, str] = {}
  pending = []
  try:
    for chunk in chunks:
      ids = sorted(chunk)
      completions.update(chunk)
      jobs = [
        Job(
          problem=problems[r // per_problem],
          completion=chunk[r],
          prefix=prompts[r // per_problem].code_prefix,
        )
        for r in ids
      ]
      if jobs:
        pending.append((ids, pool.submit(jobs)))
    verdicts = {}
    for ids, fut in pending:
      verdicts.update(zip(ids, fut.result()))
  except BaseException:
    if journal is not None:
      journal.close()  # kept: the rerun resumes from it
    raise
  if progress:
    _log.info("eval: judged %d programs of %d problems", len(verdicts), len(problems))

  samples, results = [], []
  for i, p in enumerate(problems):
    if i in excluded:  # no subtask: nothing sampled, nothing to count
      results.append(eval_lib.ProblemResult(problem_id=p.id, difficulty=p.difficulty, n=0, c=0))
      continue
    passed, rows = [], []
    for s in range(per_problem):
      r = i * per_problem + s
      v = verdicts.get(r)
      row = {
        "problem_id": p.id,
        "difficulty": p.difficulty,
        "sample": s,
        "greedy": s == n or cfg.temperature <= 0.0,
        "completion": completions.get(r, ""),
        "outcome": v.outcome if v is not None else PROMPT_TOO_LONG,
        "reward": v.reward if v is not None else None,
        "tests_passed": v.tests_passed if v is not None else 0,
        "tests_total": v.tests_total if v is not None else p.num_tests,
        "error": v.error if v is not None else "",
      }
      samples.append(row)
      rows.append(row)
      passed.append(row["outcome"] == "passed")
    greedy = passed[n] if extra_greedy else (passed[0] if cfg.temperature <= 0.0 else None)
    share_rows = rows[n:] if extra_greedy else rows[:1] if cfg.temperature <= 0.0 else rows
    results.append(
      eval_lib.ProblemResult(
        problem_id=p.id,
        difficulty=p.difficulty,
        n=n,
        c=sum(passed[:n]),
        greedy_passed=greedy,
        tests_share=tests_share(share_rows),
      )
    )
  table = eval_lib.aggregate([r for r in results if r.n > 0], ks)
  settings = {
    "config": dataclasses.asdict(cfg),
    "n": n,
    "ks": list(ks),
    "extra_greedy_sample": extra_greedy,
    "problems": len(problems),
    "prompt_too_long": len(too_long),
    "mode": "subtask" if subtask else "problem",
  }
  if subtask:
    settings.update(
      {
        "statements": statements,
        "subtask_excluded": len(excluded),
        "subtask_excluded_ids": [problems[i].id for i in sorted(excluded)],
      }
    )
  report = EvalReport(table=table, problems=results, samples=samples, settings=settings)
  if out_dir is not None:
    write_report(report, out_dir, name)
  if journal is not None:
    journal.close(delete=True)  # the report holds every sample now
  return report


def write_report(report: EvalReport, out_dir: str | Path, name: str = "eval") -> dict[str, Path]:
  """`<name>.md`, `<name>.json` (table, settings, per-problem counts), `<name>_samples.jsonl`."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  n = report.settings.get("n")
  title = f"pass@k by difficulty (n = {n}, temperature {report.settings['config']['temperature']})"
  subtask = report.settings.get("mode") == "subtask"
  if subtask:
    title = (
      f"the last-start-point subtask, greedy ({report.settings['subtask_excluded']} "
      "problem(s) without a curriculum excluded)"
    )
  md, js = eval_lib.write_tables(
    report.table,
    out / name,
    title=title,
    extra={
      "settings": report.settings,
      "problems": [problem_record(r, subtask) for r in report.problems],
    },
  )
  sp = out / f"{name}_samples.jsonl"
  with open(sp, "w", encoding="utf-8") as f:
    for row in report.samples:
      f.write(json.dumps(row) + "\n")
  return {"markdown": md, "json": js, "samples": sp}


def problem_record(result: eval_lib.ProblemResult, subtask: bool = False) -> dict:
  """One entry of `<name>.json`'s "problems" (layout in the module docstring)."""
  rec = dataclasses.asdict(result)
  if subtask:
    rec["subtask_passed"] = result.greedy_passed if result.n > 0 else None
  return rec


def table_text(report: EvalReport) -> str:
  """The markdown table (for printing and TensorBoard text)."""
  return eval_lib.to_markdown(report.table)
