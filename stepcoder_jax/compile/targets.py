"""Compile targets: TPU slices and GPU machines by their usual names, and the chip figures.

Light module (no jax at import): the command checks a name before any heavy import.

Spec figures are per chip (per GPU), dense bf16 matrix FLOP/s (no sparsity), HBM capacity and
HBM bandwidth, as the vendors publish them:
  TPU v4:  cloud.google.com/tpu/docs/v4      275 TFLOP/s, 32 GiB, 1,200 GB/s
  TPU v5e: cloud.google.com/tpu/docs/v5e     197 TFLOP/s, 16 GiB,   819 GB/s
  TPU v5p: cloud.google.com/tpu/docs/v5p     459 TFLOP/s, 95 GiB, 2,765 GB/s
  TPU v6e: cloud.google.com/tpu/docs/v6e     918 TFLOP/s, 32 GiB, 1,640 GB/s
  H100 SXM5: NVIDIA H100 Tensor Core GPU datasheet: 989 TFLOP/s bf16 dense, 80 GB, 3.35 TB/s
  H200 SXM:  NVIDIA H200 datasheet:                 989 TFLOP/s bf16 dense, 141 GB, 4.8 TB/s
  A100 SXM4 80GB: NVIDIA A100 datasheet:            312 TFLOP/s bf16 dense, 80 GB, 2.039 TB/s
The memory a program may use is what the compiler reports as available (TPU) or the figure above.
Slice layouts (topology string, chips per host, wrap-around links) follow the public TPU slice
shapes (e.g. a v4-64 is 32 chips in a 2x4x4 torus piece, 4 chips per host).
"""

from __future__ import annotations

import dataclasses
import re

from stepcoder_jax.errors import UserError

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One chip's published figures (see the module docstring for the sources)."""

  name: str
  peak_flops: float  # dense bf16 FLOP/s
  hbm_bytes: int
  hbm_bandwidth: float  # bytes/s
  source: str


CHIPS = {
  "v4": Chip("TPU v4", 275e12, 32 * GIB, 1.2e12, "cloud.google.com/tpu/docs/v4"),
  "v5e": Chip("TPU v5e", 197e12, 16 * GIB, 8.19e11, "cloud.google.com/tpu/docs/v5e"),
  "v5p": Chip("TPU v5p", 459e12, 95 * GIB, 2.765e12, "cloud.google.com/tpu/docs/v5p"),
  "v6e": Chip("TPU v6e", 918e12, 32 * GIB, 1.64e12, "cloud.google.com/tpu/docs/v6e"),
  "h100": Chip(
    "NVIDIA H100 SXM5 80GB", 989e12, 80 * 10**9, 3.35e12, "NVIDIA H100 Tensor Core GPU datasheet"
  ),
  "h200": Chip("NVIDIA H200 SXM 141GB", 989e12, 141 * 10**9, 4.8e12, "NVIDIA H200 datasheet"),
  "a100": Chip(
    "NVIDIA A100 SXM4 80GB", 312e12, 80 * 10**9, 2.039e12, "NVIDIA A100 Tensor Core GPU datasheet"
  ),
}

# Compute capability of each GPU (the compiler's target), and its streaming multiprocessors.
_GPU_ARCH = {"h100": ("9.0", 132), "h200": ("9.0", 132), "a100": ("8.0", 108)}

# v4 / v5p: chips -> torus piece (3-D); v5e / v6e: chips -> 2-D shape. Full cubes and planes of
# 16 wrap around.
_CUBE = {
  4: (2, 2, 1),
  8: (2, 2, 2),
  16: (2, 2, 4),
  32: (2, 4, 4),
  64: (4, 4, 4),
  128: (4, 4, 8),
  192: (4, 4, 12),
  256: (4, 8, 8),
  512: (8, 8, 8),
  1024: (8, 8, 16),
  2048: (8, 16, 16),
}
_PLANE = {
  1: (1, 1),
  4: (2, 2),
  8: (2, 4),
  16: (4, 4),
  32: (4, 8),
  64: (8, 8),
  128: (8, 16),
  256: (16, 16),
}


@dataclasses.dataclass(frozen=True)
class Target:
  """A named compile target.

  Attributes:
    name: as the user wrote it ('v4-64', 'h100x8').
    platform: 'tpu' or 'cuda'.
    chip: key of CHIPS.
    devices: JAX devices (one per chip: v4 and v5p as megacore).
    topology: the topology string get_topology_desc takes ('v4:2x4x4'; GPUs: '1x1xN').
    chip_config: 'megacore' or 'default' (TPU).
    chips_per_host: per-host chip bounds (TPU).
    wrap: wrap-around links per dimension (TPU).
  """

  name: str
  platform: str
  chip: str
  devices: int
  topology: str
  chip_config: str = "default"
  chips_per_host: tuple = (1, 1, 1)
  wrap: tuple = (False, False, False)

  @property
  def spec(self) -> Chip:
    return CHIPS[self.chip]

  def gpu_target_config(self) -> str:
    """A GpuTargetConfigProto (text) describing this GPU, for compiling without one."""
    cc, sms = _GPU_ARCH[self.chip]
    major, minor = cc.split(".")
    spec = self.spec
    return (
      f'gpu_device_info {{ threads_per_block_limit: 1024 threads_per_warp: 32 '
      f'shared_memory_per_block: 49152 shared_memory_per_core: 233472 '
      f'threads_per_core_limit: 2048 core_count: {sms} fpus_per_core: 128 '
      f'block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535 '
      f'memory_bandwidth: {int(spec.hbm_bandwidth)} l2_cache_size: 52428800 '
      f'clock_rate_ghz: 1.755 device_memory_size: {spec.hbm_bytes} '
      f'shared_memory_per_block_optin: 232448 '
      f'cuda_compute_capability {{ major: {major} minor: {minor} }} '
      f'registers_per_core_limit: 65536 registers_per_block_limit: 65536 }} '
      f'platform_name: "CUDA" dnn_version_info {{ major: 9 minor: 8 }} '
      f'device_description_str: "{spec.name}"'
    )


def known_names() -> str:
  return (
    "v4-8..v4-4096, v5p-8..v5p-4096 (cores = 2 x chips), v5e-1..v5e-256, v6e-1..v6e-256, "
    "h100xN, h200xN, a100xN (N GPUs, 1-8)"
  )


def parse(name: str) -> Target:
  """The target called `name`; UserError (one line) for an unknown one."""
  s = name.strip().lower()
  m = re.fullmatch(r"(v4|v5p)-(\d+)", s)
  if m and int(m.group(2)) // 2 in _CUBE and int(m.group(2)) % 2 == 0:
    chips = int(m.group(2)) // 2
    shape = _CUBE[chips]
    gen = "v4" if m.group(1) == "v4" else "v5"
    return Target(
      name,
      "tpu",
      m.group(1),
      chips,
      f"{gen}:{'x'.join(map(str, shape))}",
      "megacore",
      (2, 2, 1) if chips >= 4 else (1, 1, 1),
      (chips >= 64,) * 3,
    )
  m = re.fullmatch(r"(v5e|v6e)-(\d+)", s)
  if m and int(m.group(2)) in _PLANE:
    chips = int(m.group(2))
    x, y = _PLANE[chips]
    host = (2, 2, 1) if chips >= 4 else (1, 1, 1)
    return Target(
      name,
      "tpu",
      m.group(1),
      chips,
      f"{m.group(1)}:{x}x{y}",
      "default",
      host,
      (chips >= 256, chips >= 128, False),
    )
  m = re.fullmatch(r"(h100|h200|a100)x(\d+)", s)
  if m and 1 <= int(m.group(2)) <= 8:
    n = int(m.group(2))
    return Target(name, "cuda", m.group(1), n, f"1x1x{n}")
  raise UserError(f"--topology {name!r}: unknown target; known: {known_names()}")
