"""Signals at chosen points of a run, for tests/test_preemption.py.

A plan is a list of `[target, call, signal]`: the process sends `signal` to itself (a real signal,
through the kernel) when `target` ("module:Class.method") is called for the `call`-th time; its
handler runs as the call starts. Chosen points instead of a timer, so that which iteration a
signal falls in never depends on machine load.

Run as a script, it is the entry point of each process of a local pod (launch/local_pod.sh
--entry): it takes its plan from $PREEMPT_PLAN (JSON: process index -> plan), then runs the CLI.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import sys
import threading

SUBMIT = "stepcoder_jax.execution.pool:ExecutionPool.submit"  # once per iteration, mid-rollout
SAVE = "stepcoder_jax.checkpoint:Checkpointer.save"
WRITE = "stepcoder_jax.metrics:MetricsWriter.write"


def install(plan, setattr_=setattr) -> None:
  """Wrap each planned target (`setattr_`: e.g. pytest's monkeypatch.setattr, to undo it)."""
  by_target: dict[str, dict[int, str]] = {}
  for target, call, sig in plan:
    by_target.setdefault(target, {})[int(call)] = sig
  for target, calls in by_target.items():
    module, attr = target.split(":")
    cls_name, method = attr.split(".")
    cls = getattr(importlib.import_module(module), cls_name)
    setattr_(cls, method, _wrapped(getattr(cls, method), calls))


def _wrapped(fn, calls: dict[int, str]):
  count = [0]

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    count[0] += 1
    if count[0] in calls:
      # To the main thread, where Python runs its handlers: delivered before pthread_kill
      # returns, so the handler runs at the next call, inside the wrapped method.
      signal.pthread_kill(threading.main_thread().ident, getattr(signal, calls[count[0]]))
    return fn(*args, **kwargs)

  return wrapper


if __name__ == "__main__":
  plans = json.loads(os.environ.get("PREEMPT_PLAN", "{}"))
  install(plans.get(os.environ.get("JAX_PROCESS_ID", "0"), []))
  from stepcoder_jax import cli

  sys.exit(cli.main(sys.argv[1:]))
