"""The sharpening control of the ablation: the SFT model itself sampled at lower temperatures.

RL on a sparse pass/fail reward lowers the policy's entropy (every arm's per-token entropy fell
over its iterations). A sharper policy passes more often when sampled at the same temperature
even if it has learned nothing else, so an arm's sampled pass@1 (T = eval.temperature, 0.8)
above SFT's at that temperature could be sharpening alone. This control evaluates SFT on the
same held-out problems with the same n and seed at each temperature of `--control_temperatures`
(fixed before looking), and the report sets every arm's sampled pass@1 against SFT's at each
temperature, greedy decoding (T = 0, SFT's greedy evaluation) and T = 0.8 included. Its figure:
ablation/plots.py (plot_sharpening).

Reading it: SFT's best temperature is picked on the held-out set, which favours SFT. An arm
whose interval against every temperature excludes 0 gained more than sharpening; an arm that
does not beat SFT at some temperature showed no gain beyond what sharpening SFT gives.
"""

from __future__ import annotations

from pathlib import Path

from stepcoder_jax import stats
from stepcoder_jax.ablation.measures import diff_cell, measure_values, paired_values

SAMPLED = "pass@1 (n samples)"
GREEDY = "greedy pass@1"


def name(temperature: float) -> str:
  """The evaluation's model name (its directory under evals/): 'sft_t0.4'."""
  return f"sft_t{temperature:g}"


def check(temperatures: tuple[float, ...], eval_temperature: float) -> list[str]:
  """Problems with --control_temperatures (empty when fine)."""
  errors = [
    f"{t:g} is not > 0 (T = 0 is SFT's greedy evaluation, already run)"
    for t in temperatures
    if t <= 0
  ]
  errors += [
    f"{t:g} is the sampled evaluation's own temperature (eval.temperature), already run"
    for t in temperatures
    if t == eval_temperature
  ]
  if len(set(temperatures)) != len(temperatures):
    errors.append("a temperature is named twice")
  return errors


def curve(
  evals_dir: Path, temperatures: tuple[float, ...], eval_temperature: float
) -> dict[float, dict[str, tuple[float, str]]]:
  """temperature -> SFT's per-problem pass@1 at it, for the finished evaluations: 0 from the
  greedy one, eval_temperature from the sampled one, the others from the control's."""
  sft = measure_values(evals_dir, "sft")
  points = {}
  if GREEDY in sft:
    points[0.0] = sft[GREEDY]
  if SAMPLED in sft:
    points[eval_temperature] = sft[SAMPLED]
  for t in temperatures:
    v = measure_values(evals_dir, name(t)).get(SAMPLED)
    if v is not None:
      points[t] = v
  return dict(sorted(points.items()))


def section(
  evals_dir: Path, temperatures: tuple[float, ...], eval_temperature: float, arms: list[str]
) -> list[str]:
  """The report's section: SFT's pass@1 per temperature, and each arm's sampled pass@1 minus it,
  paired over the same problems; [] when the control was not asked for."""
  if not temperatures:
    return []
  points = curve(evals_dir, temperatures, eval_temperature)
  arm_vals = {a: v for a in arms if (v := measure_values(evals_dir, a).get(SAMPLED))}
  lines = [
    "## Sharpening control (SFT sampled at lower temperatures)",
    "",
    f"Each arm's pass@1 from its samples at T = {eval_temperature:g} minus SFT's at T, "
    "paired over the same problems, in percentage points ('*': the 95% interval excludes "
    "0). SFT at T = 0 is its greedy evaluation (one sample). SFT's best temperature is "
    "chosen on these held-out problems, which favours SFT: an arm ahead of SFT at every "
    "T gained more than sharpening; one that is not showed no gain beyond it.",
    "",
    "| T | SFT pass@1 | " + " | ".join(f"{a} minus SFT" for a in arm_vals) + " |",
    "|---:|---:|" + "---:|" * len(arm_vals),
  ]
  missing = [f"{t:g}" for t in temperatures if t not in points]
  for t, sft in points.items():
    cells = [diff_cell(paired_values(v, sft)) for v in arm_vals.values()]
    lines.append(
      f"| {t:g} | {stats.mean_ci([x for x, _ in sft.values()]).text(100, 1)} | "
      + " | ".join(cells)
      + " |"
    )
  if missing:
    lines += ["", f"Not evaluated yet: T = {', '.join(missing)}."]
  lines += ["", *verdicts(points, arm_vals, eval_temperature), ""]
  return lines


def verdicts(
  points: dict[float, dict], arm_vals: dict[str, dict], eval_temperature: float
) -> list[str]:
  """One line per arm: ahead of SFT at every temperature evaluated, or at which it is not."""
  if not points:
    return []
  out = []
  for arm, v in arm_vals.items():
    not_ahead = [f"{t:g}" for t, sft in points.items() if not paired_values(v, sft).excludes_zero]
    own = f"{eval_temperature:g}"
    if own in not_ahead:
      others = [t for t in not_ahead if t != own]
      out.append(
        f"- **{arm}**: not ahead of SFT even at its own temperature {own}"
        + (f" (nor at T = {', '.join(others)})" if others else "")
        + "."
      )
    elif not_ahead:
      out.append(
        f"- **{arm}**: not ahead of SFT (interval includes 0) at T = "
        f"{', '.join(not_ahead)}: no evidence of a gain beyond sharpening."
      )
    else:
      out.append(
        f"- **{arm}**: ahead of SFT at every temperature evaluated "
        f"({', '.join(f'{t:g}' for t in points)})."
      )
  return out
