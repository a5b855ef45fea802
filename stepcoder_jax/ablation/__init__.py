"""`stepcoder-jax ablate`: the paper's ablation (PPO, +CCCS, +FGO, StepCoder, critic-free arms).

Modules, bottom first: each imports only modules listed before it, so imports run one way.
  measures     per-problem measures of finished evaluations, paired differences as text
  data         the train / validation / held-out / RL-pool problem files
  fingerprint  what a finished stage depends on
  stages       a subprocess stage, its DONE.json marker, running one
  control      the sharpening control: its evaluations' names and its report section
  tune         `--tune`: tune points on validation, their layout and report section
  plan         Settings -> the ordered list of stages
  plots        the report's figures (the control's too), one colour per model in all of them
  report       report.md from whatever stages have finished
  run          the driver: data stage, every stage not done, the report
  signal       the reward-signal measurement's summary (`ablate --arm_dir signal`)
"""
