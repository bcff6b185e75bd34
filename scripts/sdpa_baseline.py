#!/usr/bin/env python3
"""Times PyTorch's causal scaled_dot_product_attention (bf16) at the shapes of
nsa_gpu_check's timing table, as an outside baseline for our dense flash kernel.

B=1, H=64, H_kv=4 (GQA), T = 8k..64k, (d_k, d_v) = (192, 128) and (128, 128).
For each shape it tries the SDPA backends FLASH_ATTENTION, EFFICIENT_ATTENTION,
CUDNN_ATTENTION, MATH in this order and reports the first that runs (and the others'
status). GQA: enable_gqa=True when the installed torch accepts it, else K/V are
expanded to H heads (the expansion is outside the timed region).

Prints a table and one JSON line ("SDPA_JSON {...}"). Exits 0 when there is no GPU or
no torch ("SKIPPED: ..."), since this is a baseline, not a check.

Usage: python3 scripts/sdpa_baseline.py [--max-t 65536] [--budget 1.5] [--json out.json]
"""
import argparse
import json
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-t", type=int, default=65536)
    ap.add_argument("--budget", type=float, default=1.5, help="seconds of timed reps per shape")
    ap.add_argument("--max-reps", type=int, default=5)
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001
        print(f"SKIPPED: no torch ({e})")
        return 0
    if not torch.cuda.is_available():
        print("SKIPPED: no CUDA device")
        return 0
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except Exception as e:  # noqa: BLE001
        print(f"SKIPPED: torch.nn.attention.sdpa_kernel unavailable ({e})")
        return 0

    dev = torch.device("cuda")
    print(f"sdpa_baseline: torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}, device {torch.cuda.get_device_name(0)}")
    backends = [(name, getattr(SDPBackend, name)) for name in
                ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")
                if hasattr(SDPBackend, name)]
    B, H, Hkv = 1, 64, 4
    Ts = [t for t in (8192, 16384, 32768, 65536) if t <= args.max_t]
    results = []

    def gqa_call(q, k, v):
        try:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        except TypeError:
            raise RuntimeError("enable_gqa unsupported")

    def time_fn(fn):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        reps = int(max(1, min(args.max_reps, args.budget / max(first, 1e-6))))
        times = []
        for _ in range(reps):
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        return statistics.median(times), reps

    print(f"{'T':>7} {'d_k':>4} {'d_v':>4} | {'backend':<20} {'gqa':<9} {'ms':>9} {'TF/s':>7} | others")
    for dk, dv in ((192, 128), (128, 128)):
        for T in Ts:
            torch.manual_seed(0)
            q = torch.randn(B, H, T, dk, device=dev, dtype=torch.bfloat16)
            k = torch.randn(B, Hkv, T, dk, device=dev, dtype=torch.bfloat16)
            v = torch.randn(B, Hkv, T, dv, device=dev, dtype=torch.bfloat16)
            flops = 2.0 * H * (dk + dv) * T * (T + 1) / 2.0
            row = {"T": T, "d_k": dk, "d_v": dv, "H": H, "H_kv": Hkv, "backend": None, "ms": None,
                   "tflops": None, "gqa": None, "status": {}}
            for name, be in backends:
                if row["backend"] is not None:
                    row["status"][name] = "not tried"
                    continue
                if name == "MATH" and T > 16384:
                    row["status"][name] = "skipped (T^2 memory)"
                    continue
                for gqa in ("enable_gqa", "expanded"):
                    try:
                        if gqa == "enable_gqa":
                            fn = lambda: gqa_call(q, k, v)  # noqa: E731
                        else:
                            ke = k.repeat_interleave(H // Hkv, dim=1)
                            ve = v.repeat_interleave(H // Hkv, dim=1)
                            fn = lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=True)  # noqa: E731
                        with sdpa_kernel([be]):
                            ms, reps = time_fn(fn)
                        row.update(backend=name, ms=ms, tflops=flops / (ms * 1e-3) / 1e12, gqa=gqa, reps=reps)
                        row["status"][name] = "ok"
                        break
                    except Exception as e:  # noqa: BLE001
                        msg = str(e).strip().splitlines()[0][:90] if str(e).strip() else type(e).__name__
                        row["status"][name] = f"{gqa}: {msg}"
                        torch.cuda.synchronize()
                if row["backend"] is None and name not in row["status"]:
                    row["status"][name] = "failed"
            others = "; ".join(f"{n}={s}" for n, s in row["status"].items() if s != "ok")
            if row["backend"]:
                print(f"{T:>7} {dk:>4} {dv:>4} | {row['backend']:<20} {row['gqa']:<9} {row['ms']:>9.3f} "
                      f"{row['tflops']:>7.1f} | {others}")
            else:
                print(f"{T:>7} {dk:>4} {dv:>4} | {'none ran':<20} {'':<9} {'':>9} {'':>7} | {others}")
            sys.stdout.flush()
            results.append(row)
            del q, k, v
            torch.cuda.empty_cache()
    print("SDPA_JSON " + json.dumps(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
