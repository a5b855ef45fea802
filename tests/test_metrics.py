"""MetricsWriter (JSONL + TensorBoard), the progress bar and the plots."""

import io
import json

import numpy as np
import pytest

from stepcoder_jax import metrics


def test_writer_jsonl_and_tensorboard(tmp_path):
  w = metrics.MetricsWriter(tmp_path, enabled=True)
  w.write(1, {"reward": np.float32(-0.5), "pass_rate": 0.25, "stages": np.array([3, 1, 0])})
  # Flushed at once: readable before close (a killed run keeps finished steps).
  rows = metrics.read_jsonl(w.jsonl_path)
  assert rows[0]["step"] == 1 and rows[0]["reward"] == pytest.approx(-0.5)
  assert rows[0]["stages"] == [3, 1, 0]
  w.write(2, {"reward": 0.5, "loss": float("nan")}, prefix="train/")
  w.close()
  with open(w.jsonl_path, "a") as f:
    f.write('{"step": 3, "rew')  # torn line from a kill
  rows = metrics.read_jsonl(w.jsonl_path)
  assert [r["step"] for r in rows] == [1, 2]
  assert rows[1]["train/reward"] == 0.5 and rows[1]["train/loss"] is None
  events = list((tmp_path / metrics.TB_DIR).glob("events.out.tfevents.*"))
  assert events and events[0].stat().st_size > 0
  scalars = _read_scalars(events[0])
  assert scalars["reward"] == [(1, pytest.approx(-0.5))]
  assert scalars["train/reward"] == [(2, 0.5)]


def _read_scalars(path):
  """Decode a TensorBoard event file (TFRecord framing + Event protos) without tensorboard."""
  import struct
  from tensorboardX.proto import event_pb2

  data = path.read_bytes()
  out, i = {}, 0
  while i < len(data):
    (n,) = struct.unpack("<Q", data[i : i + 8])
    ev = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
    i += 12 + n + 4
    for v in ev.summary.value:
      if v.WhichOneof("value") == "simple_value":
        out.setdefault(v.tag, []).append((ev.step, v.simple_value))
  return out


def test_disabled_writer_writes_nothing(tmp_path):
  w = metrics.MetricsWriter(tmp_path / "run", enabled=False)
  w.write(1, {"reward": 1.0})
  w.close()
  assert not (tmp_path / "run").exists()


def test_appends_across_writers(tmp_path):
  for step in (1, 2):
    with metrics.MetricsWriter(tmp_path, enabled=True, tensorboard=False) as w:
      w.write(step, {"reward": float(step)})
  assert [r["reward"] for r in metrics.read_jsonl(tmp_path / metrics.JSONL_NAME)] == [1.0, 2.0]


def test_progress_bar_shows_reward_pass_rate_and_eta():
  out = io.StringIO()
  with metrics.ProgressBar(total=10, enabled=True, file=out) as bar:
    bar.update({"reward": np.float32(0.25), "pass_rate": 0.5, "other": 1.0})
    bar.update({"reward": 0.75, "pass_rate": 0.625})
    assert bar.shown == {"reward": "0.750", "pass_rate": "0.625"}
  text = out.getvalue()
  assert "2/10" in text and "reward=0.750" in text and "<" in text  # tqdm's elapsed<remaining


def test_plots(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text(
    "\n".join(
      json.dumps({"step": i, "reward_mean": -1 + 0.1 * i, "my/key": i / 20}) for i in range(20)
    )
  )
  png = metrics.plot_curves(path, tmp_path / "curves.png", ["reward_mean", "my/key"], smooth=3)
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  import matplotlib.image as mpimg

  assert mpimg.imread(png).shape[0] > 200  # two panels


def test_curves_are_labelled_with_what_they_show_and_say_how_they_are_smoothed(tmp_path):
  path = tmp_path / "m.jsonl"
  path.write_text(
    "\n".join(json.dumps({"step": i, "ppo/kl_coef": 0.05, "my/key": i}) for i in range(9))
  )
  fig = metrics.curves_figure(
    path, ["ppo/kl_coef", "my/key"], smooth=3, title="run x", x_label="iteration"
  )
  known, unknown = fig.axes
  assert known.get_title("left") == "KL penalty coefficient (ppo/kl_coef)"
  assert known.get_ylabel() == metrics.CURVE_LABELS["ppo/kl_coef"][1]
  assert unknown.get_title("left") == unknown.get_ylabel() == "my/key"  # no label known: the key
  assert unknown.get_xlabel() == "iteration" and fig.get_suptitle() == "run x"
  assert [t.get_text() for t in fig.legends[0].get_texts()] == [
    "raw, per iteration",
    "moving average over 3 iterations",
  ]
  assert len(known.lines) == 2 and len(known.lines[1].get_xdata()) == 9 - 2  # raw + smoothed
  unsmoothed = metrics.curves_figure(path, ["my/key"])
  assert not unsmoothed.legends and len(unsmoothed.axes[0].lines) == 1


def test_a_resumed_writer_drops_the_killed_runs_later_steps(tmp_path):
  # A run killed after logging steps 1-3, resumed from its checkpoint at step 2: step 3 is
  # written again by the resumed run, so the JSONL keeps one row per step and TensorBoard is told
  # to discard the old events from step 3 on (a SessionLog START at the purge step).
  import struct
  from tensorboardX.proto import event_pb2

  with metrics.MetricsWriter(tmp_path, enabled=True) as w:
    for step in (1, 2, 3):
      w.write(step, {"reward": float(step)})
  with metrics.MetricsWriter(tmp_path, enabled=True, resumed_at=2) as w:
    w.write(3, {"reward": 30.0})
  rows = metrics.read_jsonl(tmp_path / metrics.JSONL_NAME)
  assert [(r["step"], r["reward"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0)]
  starts = []
  for f in (tmp_path / metrics.TB_DIR).glob("events.out.tfevents.*"):
    data, i = f.read_bytes(), 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i : i + 8])
      ev = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
      i += 12 + n + 4
      if ev.HasField("session_log") and ev.session_log.status == event_pb2.SessionLog.START:
        starts.append(ev.step)
  assert starts == [3]  # only the resumed writer purges
