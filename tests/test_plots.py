"""The ablation's figures read without a caption: each panel has its own axis label (unit and
problem count), a model at 0 is drawn, a missing one is marked, every model has its colour, the
training curves have a title and one legend that names the smoothing, and report.md embeds them."""

import json
import re
from pathlib import Path

import pytest
from matplotlib.colors import to_rgba

from stepcoder_jax.ablation import plots as ablation_plots
from stepcoder_jax.ablation import report as ablation_report

PUBLISHED = Path(__file__).resolve().parents[1] / "docs" / "results" / "ablation"


def _values(vals: list[float]) -> dict[str, tuple[float, str]]:
  return {f"p{i}": (v, "x") for i, v in enumerate(vals)}


def _models() -> dict[str, dict]:
  """base and sft with every measure; ppo passing nothing greedy and never run on the RL pool."""
  full = {
    "greedy pass@1": _values([1, 0, 0, 0]),
    "pass@1 (n samples)": _values([0.25, 0, 0, 0.5]),
    "tests share": _values([1, 0.5, 0, 0]),
    "subtask pass rate": _values([1, 0, 0]),
    "RL-pool pass@1": _values([1, 0]),
  }
  ppo = {**full, "greedy pass@1": _values([0, 0, 0, 0])}
  del ppo["RL-pool pass@1"]
  return {"base": full, "sft": full, "ppo": ppo}


def _panels(fig) -> list:
  return [ax for ax in fig.axes if ax.axison]


def _flat(text: str) -> str:
  return " ".join(text.split())


def test_heldout_panels_have_their_own_unit_and_count_and_draw_zero_and_missing():
  fig = ablation_plots.heldout_figure(_models(), "held out", sampled=(0.8, 4))
  panels = _panels(fig)
  labels = {_flat(ax.get_title()): _flat(ax.get_ylabel()) for ax in panels}
  assert len(panels) == 5 and len(set(labels.values())) == 5 and all(labels.values())
  by_measure = dict(zip(ablation_plots.MEASURE_AXES, labels.values()))
  assert by_measure["greedy pass@1"] == "greedy pass@1, % of 4 problems"
  assert by_measure["pass@1 (n samples)"].startswith("sampled pass@1 at T = 0.8, 4 samples each")
  assert "% of a problem's tests (mean of 4 problems)" in by_measure["tests share"]
  assert (
    by_measure["subtask pass rate"] == "subtask pass rate, % of 3 problems with a CCCS start point"
  )
  assert by_measure["RL-pool pass@1"] == "greedy pass@1, % of 2 RL-pool problems"

  greedy, rl_pool = panels[0], panels[4]
  # Bars in the models' colours, in the order of the tick labels.
  ticks = [t.get_text() for t in greedy.get_xticklabels()]
  assert ticks == ["base", "sft", "ppo"]
  assert [p.get_facecolor() for p in greedy.patches] == [
    to_rgba(ablation_plots.colour(m)) for m in ticks
  ]
  # ppo at 0: a line at 0 in its colour, and its value printed.
  zero_lines = [
    c
    for c in greedy.collections
    if tuple(c.get_colors()[0]) == to_rgba(ablation_plots.colour("ppo"))
  ]
  assert zero_lines and all(y == 0 for seg in zero_lines[0].get_segments() for _, y in seg)
  texts = [t.get_text() for t in greedy.texts]
  assert texts == ["25.0", "25.0", "0.0"]
  # Not evaluated on the RL pool: marked, not drawn as a zero.
  assert [t.get_text() for t in rl_pool.texts] == ["50.0", "50.0", "n/a"]
  assert fig.get_suptitle().startswith("held out\n")


def test_colours_are_fixed_by_name_not_by_position():
  c = ablation_plots.colour
  named = list(ablation_plots.MODEL_COLOURS.values())
  assert len(set(named)) == len(named)  # no two named models alike
  assert c("StepCoder") == c("stepcoder") and c("SFT") == c("sft")  # the demo's labels
  assert c("signal_x") == c("signal_x") and c("signal_x") not in named


def _log(path: Path, rows: int) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(
    "\n".join(
      json.dumps(
        {
          "step": i,
          "reward_mean": -1 + 0.05 * i,
          "pass_rate": i / 20,
          "truncated_rate": 0.1,
          "cccs/stage_0": 4 - i // 4,
          "cccs/stage_1": i // 4,
        }
      )
      for i in range(1, rows + 1)
    )
  )


def test_training_curves_have_a_title_one_legend_naming_the_smoothing_and_units(tmp_path):
  _log(tmp_path / "metrics" / "ppo.jsonl", 12)
  _log(tmp_path / "metrics" / "cccs.jsonl", 3)  # fewer points than the window: raw only
  fig = ablation_plots.training_figure(tmp_path, ["ppo", "cccs", "fgo"])  # fgo: no log yet
  panels = _panels(fig)
  titles = [ax.get_title() for ax in panels]
  assert titles == [
    ablation_plots.CURVE_AXES[k][0]
    for k in ("reward_mean", "pass_rate", "cccs/mean_stage", "truncated_rate")
  ]
  assert all(ax.get_ylabel() for ax in panels)
  assert [ax.get_xlabel() for ax in panels[-2:]] == ["iteration", "iteration"]
  assert fig.get_suptitle()
  assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
  legend = [t.get_text() for t in fig.legends[0].get_texts()]
  assert legend == [
    "ppo",
    "cccs",
    "raw, per iteration",
    f"moving average over {ablation_plots.SMOOTH} iterations",
  ]
  reward = panels[0].lines
  colours = [to_rgba(line.get_color()) for line in reward]
  ppo, cccs = (to_rgba(ablation_plots.colour(a)) for a in ("ppo", "cccs"))
  assert colours == [ppo, ppo, cccs]  # ppo raw + smoothed, cccs raw
  assert reward[0].get_alpha() < 0.5 and reward[1].get_alpha() is None
  assert len(reward[1].get_xdata()) == 12 - ablation_plots.SMOOTH + 1


def test_report_embeds_its_figures(tmp_path):
  lines = ablation_report.plot_links(tmp_path, [tmp_path / "plots" / "heldout.png"])
  assert lines[0] == "![held-out measures per model](plots/heldout.png)"
  # The published report embeds every published figure by a link relative to itself.
  report = (PUBLISHED / "report.md").read_text(encoding="utf-8")
  embedded = re.findall(r"^!\[[^\]]+\]\((plots/[^)]+\.png)\)$", report, re.M)
  assert sorted(embedded) == sorted(f"plots/{p.name}" for p in (PUBLISHED / "plots").glob("*"))


@pytest.mark.parametrize("sampled", [None, (0.6, 2)])
def test_measure_axes_name_the_sampled_settings_only_when_known(sampled):
  _, label = ablation_plots.measure_axes("pass@1 (n samples)", "7", sampled)
  assert ("T = 0.6, 2 samples each" in label) == (sampled is not None)
  assert label.endswith("(mean of 7 problems)")
