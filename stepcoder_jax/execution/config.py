"""Light gin-configurable dataclasses (no jax import)."""

import dataclasses
from typing import Callable

import gin


@gin.configurable('execution')
@dataclasses.dataclass
class ExecutionConfig:
  """The host-side sandboxed execution pool (stepcoder_jax.execution.pool).

  Attributes:
    workers: persistent worker processes; 0 means the CPU count.
    timeout_s: wall-time limit of one test (seconds).
    program_timeout_s: wall-time limit of one whole program (all its tests).
    memory_mb: address-space limit (RLIMIT_AS) of a program, MiB.
    max_processes: RLIMIT_NPROC (threads count too) of a program, enforced under a per-worker
      sandbox uid when the pool runs as root.
    max_output_bytes: cap of each output file, stdout and stderr (RLIMIT_FSIZE).
    max_open_files: RLIMIT_NOFILE of a program.
    coverage: trace executed lines (needed by FGO); off makes judging a little faster.
    stop_at_first_failure: skip the remaining tests of a program after its first non-pass.
    allow_fork: let programs fork (bounded by max_processes); off blocks fork/exec/spawn.
    network_namespace: give each worker an empty network namespace when the OS permits; socket
      creation is blocked inside programs in any case.
    sandbox_uid_base: when root, each worker runs programs as a random uid >= this base.
    float_rel_tol: relative tolerance of float comparisons (APPS uses numpy.allclose: 1e-5).
    float_abs_tol: absolute tolerance of float comparisons (numpy.allclose default: 1e-8).
    max_error_chars: the error message is cut to this many characters.
    preload_modules: imported by each worker before forking, so programs get them for free
      (and, without a private root, when the sandbox uid cannot read the interpreter's files,
      at all: in the private root it can). Big modules
      (numpy) make every fork slower: add them only when programs need them. threading is
      left out on purpose: its at-fork hook costs every child ~0.3 ms.
    import_on_demand: imported by a child before it is confined, only when the program's text
      names them (without a private root, a sandbox uid may not be able to import them
      itself); ~1 ms for threading,
      ~0.1 s for numpy, paid only by the programs that name them.
    sandbox_root: parent of the workers' directories (``scj-<worker pid>-<random>``, one
      subdirectory per program); None: /dev/shm when writable, else the system temp dir.
    mount_namespace: give each worker a mount namespace (root, or a user namespace of its own
      when the OS permits) in which its directory is a tmpfs capped at max_dir_mb and
      max_dir_files, and whose programs see a read-only root holding only the interpreter, its
      libraries and that directory (``mounts.py``). Off, or where the OS refuses: programs
      store into the sandbox root uncapped and see the host's files (the audit hook still
      refuses writes outside their directory).
    max_dir_mb: size cap of a worker's directory (its current program's files, stdout and stderr
      included), MiB; writes past it fail with ENOSPC in the program.
    max_dir_files: inode cap of that directory.
    env_allowlist: the variables programs (and workers) inherit from the pool's environment;
      nothing else is passed (a trainer's environment holds tokens and credentials). Programs
      also get HOME and TMPDIR set to their own directory and one BLAS/OpenMP thread.
    extra_env: variables set for programs and workers on top of the allowlist.
  """

  workers: int = 0
  timeout_s: float = 4.0
  program_timeout_s: float = 30.0
  memory_mb: int = 2048
  max_processes: int = 32
  max_output_bytes: int = 1 << 20
  max_open_files: int = 64
  coverage: bool = True
  stop_at_first_failure: bool = False
  allow_fork: bool = False
  network_namespace: bool = True
  sandbox_uid_base: int = 200000
  float_rel_tol: float = 1e-5
  float_abs_tol: float = 1e-8
  max_error_chars: int = 500
  preload_modules: tuple = (
    "array",
    "atexit",
    "bisect",
    "calendar",
    "cmath",
    "collections",
    "contextlib",
    "copy",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "fileinput",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "io",
    "itertools",
    "json",
    "math",
    "numbers",
    "operator",
    "pprint",
    "random",
    "re",
    "statistics",
    "string",
    "struct",
    "textwrap",
    "time",
    "typing",
    "unicodedata",
  )
  import_on_demand: tuple = ("threading", "queue", "concurrent.futures", "numpy")
  sandbox_root: str | None = None
  mount_namespace: bool = True
  max_dir_mb: int = 64
  max_dir_files: int = 1024
  env_allowlist: tuple = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONHASHSEED")
  extra_env: dict = dataclasses.field(default_factory=dict)


@gin.configurable('reward')
@dataclasses.dataclass
class RewardConfig:
  """The reward of one judged program (PPO places it on the last generated token).

  Attributes:
    passed, failed, runtime_error, timeout, compile_error: the CodeRL / StepCoder reward of each
      outcome (the default reward).
    fn: a plug-in replacing it: ``fn(problem, completion, result) -> float`` with the Problem,
      the completion text judged (without its prefix) and the ExecResult (outcome, per-test
      ``test_verdicts``, ``tests_passed``/``tests_total``, executed lines, and ``reward``, the
      CodeRL value). It runs in the judging process, unsandboxed, once per program. In gin:
      ``reward.fn = @my_module.my_reward`` after ``import my_module`` (a function registered
      with ``gin.register`` or ``@gin.configurable``). FGO's mask does not depend on it.
  """

  passed: float = 1.0
  failed: float = -0.3
  runtime_error: float = -0.6
  timeout: float = -0.6
  compile_error: float = -1.0
  fn: Callable[..., float] | None = None
