"""Write README.md of docs/results/paper_scale from the per-target JSON reports (run.sh).

Usage: python docs/results/paper_scale/summarize.py   (rerun after run.sh finishes a target)
"""

import json
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["v4-64", "v5e-16", "v5p-64", "v4-32", "v5e-256", "h100x8"]
PROGRAMS = ("sft_step", "sampler", "scoring", "ppo_update")


def gib(x):
  return f"{x / 2**30:.1f}"


def ratio(p):
  r = p.get("flops_vs_expected") or p.get("flops_vs_passes_n_tokens")
  return f"{r:.2f}" if r else "-"


def main():
  reports = {p.stem: json.loads(p.read_text()) for p in HERE.glob("*.json")}
  names = [n for n in ORDER if n in reports] + sorted(set(reports) - set(ORDER))
  commit = subprocess.run(
    ["git", "log", "-1", "--format=%h", "--", ":/stepcoder_jax/compile"],
    capture_output=True,
    text=True,
    cwd=HERE,
  ).stdout.strip()
  out = [HERE.joinpath("README.head.md").read_text().replace("{COMMIT}", commit)]
  out.append("\n## Per target\n")
  out.append("| target | chips | mesh | fits | iteration bound (s) | MFU bound | first misfit |")
  out.append("|---|---|---|---|---|---|---|")
  for n in names:
    r = reports[n]
    mesh = "x".join(str(v) for v in r["mesh"].values())
    mfu = f"{100 * r['mfu_bound']:.1f}%" if r.get("mfu_bound") else "-"
    miss = (r.get("does_not_fit") or "").split(";")[0].split(": ", 1)[-1] or "-"
    out.append(
      f"| {n} | {r['devices']} x {r['chip']} | {mesh} | {'yes' if r['fits'] else 'no'} "
      f"| {r['iteration_time_lower_bound_s']:.1f} | {mfu} | {miss} |"
    )
  out.append("\n## Per program (per chip)\n")
  out.append(
    "| target | program | peak GiB (of) | args GiB | temps GiB | TFLOP | x kNT | HBM GB "
    "| collectives GB | bound s | compile s |"
  )
  out.append("|---|---|---|---|---|---|---|---|---|---|---|")
  for n in names:
    r = reports[n]
    for name in PROGRAMS:
      p = r["programs"].get(name)
      if p is None:
        continue
      if p.get("compiler_message") and not p["fits"]:
        out.append(
          f"| {n} | {name} | {gib(p['peak_bytes'])} ({gib(p['device_memory_bytes'])}) "
          f"| - | {gib(p['temp_bytes'])} | - | - | - | - | - | {p['compile_s']} |"
        )
        continue
      out.append(
        f"| {n} | {name} | {gib(p['peak_bytes'])} ({gib(p['device_memory_bytes'])}) | "
        f"{gib(p['argument_bytes'])} | {gib(p['temp_bytes'])} | {p['flops'] / 1e12:.1f} "
        f"| {ratio(p)} | {p['bytes_accessed'] / 1e9:.1f} | "
        f"{p['collective_bytes'] / 1e9:.2f} | {p['time_lower_bound_s']:.2f} | "
        f"{p['compile_s']} |"
      )
  out.append("\n## Decode step of the sampler (per chip, per generated token)\n")
  out.append("| target | GFLOP | HBM GB | collectives (operand MB by kind) |")
  out.append("|---|---|---|---|")
  for n in names:
    step = reports[n]["programs"].get("sampler", {}).get("decode_step")
    if step:
      kinds = ", ".join(
        f"{k} {v['operand_bytes'] / 1e6:.1f} ({int(v['count'])} ops)"
        for k, v in step["collectives"].items()
      )
      out.append(
        f"| {n} | {step['flops'] / 1e9:.1f} | {step['bytes_accessed'] / 1e9:.2f} | {kinds} |"
      )
  misfits = [
    f"- {n}: `{reports[n]['does_not_fit']}`" for n in names if reports[n].get("does_not_fit")
  ]
  if misfits:
    out.append("\n## Messages of targets that do not fit\n")
    out += misfits
  versions = {
    json.dumps(r.get("versions", {"jax": r.get("jax_version")}), sort_keys=True)
    for r in reports.values()
  }
  out.append("\nLibrary versions: " + "; ".join(sorted(versions)))
  earlier = sorted((HERE / "earlier").glob("*.json"))
  if earlier:
    out.append(
      "\n## Earlier compiles (commit c190447): memory, FLOPs and collectives valid; "
      "HBM bytes and time bounds not\n"
    )
    out.append(
      "These ran before commit 85eda86, whose byte count charged an in-place update "
      "(the KV cache's new column, a loop's output row) with its whole buffer; their "
      "`bytes_accessed`, `memory_time_s`, time bounds and MFU bound overstate traffic "
      "(the decode step ~2x). Memory (the compiler's buffer assignment), FLOPs and "
      "collectives are computed the same way as above.\n"
    )
    out.append(
      "| target | program | fits | peak GiB (of) | args GiB | temps GiB | TFLOP | "
      "x kNT (passes) | compute bound s | collectives GB | compile s |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for f in earlier:
      r = json.loads(f.read_text())
      for name in PROGRAMS:
        p = r["programs"].get(name)
        if p:
          out.append(
            f"| {f.stem} | {name} | {'yes' if p['fits'] else 'no'} | "
            f"{gib(p['peak_bytes'])} ({gib(p['device_memory_bytes'])}) | "
            f"{gib(p['argument_bytes'])} | {gib(p['temp_bytes'])} | "
            f"{p['flops'] / 1e12:.1f} | {ratio(p)} | {p['compute_time_s']:.2f} | "
            f"{p['collective_bytes'] / 1e9:.1f} | {p['compile_s']} |"
          )
      step = r["programs"].get("sampler", {}).get("decode_step")
      if step:
        kinds = ", ".join(
          f"{k} {v['operand_bytes'] / 1e6:.1f} MB ({int(v['count'])} ops)"
          for k, v in step["collectives"].items()
        )
        out.append(
          f"\n{f.stem} decode step (per chip, per token): "
          f"{step['flops'] / 1e9:.1f} GFLOP, collectives {kinds}."
        )
  pending = [n for n in ORDER if n not in reports]
  if pending:
    out.append(f"\nNot compiled yet (run.sh resumes with them): {', '.join(pending)}.")
  (HERE / "README.md").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
  main()
