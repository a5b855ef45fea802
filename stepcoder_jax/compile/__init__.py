"""Ahead-of-time compilation of every program of a run for a named TPU slice or GPU target, from
any machine (no accelerator needed): per-device memory, FLOPs, collectives and time bounds.

  targets.py   slice and GPU names -> compile-only devices, and the chip spec table
  programs.py  the run's jitted programs with abstract, sharded arguments
  hlo.py       compiled HLO text -> FLOPs, bytes and collectives with loop trip counts
  report.py    compiling each program and putting the numbers together
"""
