#!/usr/bin/env python3
"""Our attention beside the peers a user would pick instead, at the same shapes, in one run.

    bench/peers/bench_peers.py [--nsa build-dev/tools/nsa/nsa] [--shapes paper,llama3-8b]
        [--tokens 4096,16384] [--phases forward,decode] [--threads 2] [--json out.json]

For every (shape, T, phase): `nsa bench --shape S --tokens T --phases P --bf16 --json -`
(our dense and NSA, fp32 and bf16 storage, with their rooflines), then
  torch   scaled_dot_product_attention, fp32 and bf16, backend named (torch_sdpa.py);
  ggml    ggml_flash_attn_ext through ggml-python, K/V f32 and f16 (ggml_attention.py);
all with the same thread count. Prints one table (ms; "x" columns: peer ms / our dense ms,
so > 1 means ours is faster) and writes the numbers as JSON.
Shapes are nsa bench's presets (H / H_kv / d_k / d_v). torch's flash kernel needs
d_k = d_v: at the paper's shape (192 / 128) it falls back to MATH, named as such.
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys

import warnings

import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ggml_attention  # noqa: E402
import torch_sdpa  # noqa: E402

SHAPES = {  # as tools/nsa/bench.cc's --shape presets
    "paper": (16, 1, 192, 128), "llama3-8b": (32, 8, 128, 128), "llama3-70b": (64, 8, 128, 128),
    "qwen2.5-7b": (28, 4, 128, 128), "mha": (16, 16, 64, 64),
}


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ours(nsa, shape, T, phase, threads, decode_steps):
    cmd = [nsa, "bench", "--shape", shape, "--tokens", str(T), "--phases", phase, "--bf16", "--threads",
           str(threads), "--decode-steps", str(decode_steps), "--reps", "3", "--json", "-"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"bench_peers: {' '.join(cmd)} failed:\n{run.stderr}")
    rows = json.loads(run.stdout)["results"]
    return {f"{r['impl']}_{r['dtype']}": r for r in rows}


def peers(shape, T, phase, threads, decode_steps):
    H, H_kv, d_k, d_v = SHAPES[shape]
    torch.set_num_threads(threads)
    out = {}
    for dtype in ("fp32", "bf16"):
        if phase == "forward":
            ms, backend = torch_sdpa.forward_ms(H, H_kv, d_k, d_v, T, dtype)
        else:
            ms, backend = torch_sdpa.decode_ms(H, H_kv, d_k, d_v, T, dtype, reps=decode_steps)
        out[f"torch_{dtype}"] = {"ms": ms, "backend": backend}
    if ggml_attention.available():
        for kv in ("f32", "f16"):
            if phase == "forward":
                ms = ggml_attention.forward_ms(H, H_kv, d_k, d_v, T, kv, threads)
            else:
                ms = ggml_attention.decode_ms(H, H_kv, d_k, d_v, T, kv, threads, reps=decode_steps)
            out[f"ggml_{kv}"] = {"ms": ms}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = HERE.parent.parent
    ap.add_argument("--nsa", default=str(root / "build-dev" / "tools" / "nsa" / "nsa"), help="the nsa binary")
    ap.add_argument("--shapes", default="paper,llama3-8b,qwen2.5-7b,mha")
    ap.add_argument("--tokens", default="4096,16384")
    ap.add_argument("--phases", default="forward,decode")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--json", help="write the numbers here")
    a = ap.parse_args(argv)
    # torch says why its flash kernel declined (d_k != d_v); the table names the backend.
    warnings.filterwarnings("ignore", message="Flash attention")
    if not os.access(a.nsa, os.X_OK):
        raise SystemExit(f"bench_peers: no nsa binary at {a.nsa} (build it, or pass --nsa)")
    shapes = a.shapes.split(",")
    for s in shapes:
        if s not in SHAPES:
            raise SystemExit(f"bench_peers: unknown shape '{s}' (one of {', '.join(SHAPES)})")
    tokens = [int(t) for t in a.tokens.split(",")]
    phases = a.phases.split(",")
    for p in phases:
        if p not in ("forward", "decode"):
            raise SystemExit(f"bench_peers: unknown phase '{p}' (forward, decode)")
    ggml_name = ggml_attention.version() if ggml_attention.available() else "ggml: not installed (pip install ggml-python)"
    header = (f"bench_peers: {cpu_name()}; {a.threads} threads; torch {torch.__version__}; {ggml_name}\n"
              f"ms per call (decode: one step); x = peer / our dense (> 1: ours faster); "
              f"roof = our dense row's roofline fraction and bound")
    print(header, flush=True)
    cols = ("dense32", "nsa32", "dense16", "nsa16", "torch32", "torch16", "ggml32", "ggml16")
    print(f"{'shape':<11} {'T':>6} {'phase':<8} " + " ".join(f"{c:>9}" for c in cols) +
          f" {'roof':>12}  torch32/x  torch16/x  ggml32/x  ggml16/x", flush=True)
    records = []
    for shape in shapes:
        for T in tokens:
            for phase in phases:
                mine = ours(a.nsa, shape, T, phase, a.threads, a.decode_steps)
                other = peers(shape, T, phase, a.threads, a.decode_steps)
                rec = {"shape": shape, "T": T, "phase": phase, "ours": mine, "peers": other}
                records.append(rec)
                ms = lambda d, key: d[key]["ms"] if key in d else float("nan")
                vals = [ms(mine, "dense_fp32"), ms(mine, "nsa_fp32"), ms(mine, "dense_bf16"), ms(mine, "nsa_bf16"),
                        ms(other, "torch_fp32"), ms(other, "torch_bf16"), ms(other, "ggml_f32"), ms(other, "ggml_f16")]
                roof = mine["dense_fp32"]
                ratio = lambda peer, base: peer / base if base > 0 else float("nan")
                backends = f"{other['torch_fp32']['backend']} / {other['torch_bf16']['backend']}"
                print(f"{shape:<11} {T:>6} {phase:<8} " + " ".join(f"{v:>9.3f}" for v in vals) +
                      f" {100 * roof['roofline']:>5.0f}% {roof['bound']:<6}"
                      f"  {ratio(vals[4], vals[0]):>8.2f}x  {ratio(vals[5], vals[2]):>8.2f}x"
                      f"  {ratio(vals[6], vals[0]):>7.2f}x  {ratio(vals[7], vals[2]):>7.2f}x  torch {backends}",
                      flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"header": header, "cpu": cpu_name(), "threads": a.threads, "torch": torch.__version__,
                       "ggml": ggml_name, "results": records}, f, indent=1)


if __name__ == "__main__":
    main()
