#!/usr/bin/env python3
"""Smoke test of the peer benchmarks (ctest: bench_peers_smoke): at tiny shapes, the timed
peer computations are attention (torch SDPA and ggml's flash_attn_ext decode and causal
forward against a float64 numpy softmax, GQA and d_k != d_v included), and bench_peers.py
runs end to end against the nsa binary and writes its JSON.

    test_peers.py --nsa PATH_OF_NSA --workdir DIR
"""
import argparse
import json
import pathlib
import sys

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_peers  # noqa: E402
import ggml_attention  # noqa: E402
import torch_sdpa  # noqa: E402


def softmax_attention(q, k, v, causal):
    """q [H, n, d_k], k [H_kv, T, d_k], v [H_kv, T, d_v] -> [H, n, d_v] in float64; the n
    queries are the last n positions when causal."""
    H, n, d_k = q.shape
    H_kv, T, _ = k.shape
    out = np.zeros((H, n, v.shape[-1]))
    for h in range(H):
        g = h // (H // H_kv)
        s = q[h].astype(np.float64) @ k[g].astype(np.float64).T / np.sqrt(d_k)
        if causal:
            s = np.where(np.arange(T)[None, :] <= (T - n + np.arange(n))[:, None], s, -np.inf)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        out[h] = (p / p.sum(axis=1, keepdims=True)) @ v[g].astype(np.float64)
    return out


def check_ggml_decode():
    for H, H_kv, d_k, d_v, T, kv in ((6, 2, 16, 8, 100, "f32"), (4, 4, 64, 64, 70, "f16"), (16, 1, 192, 128, 40, "f32")):
        o, q, k, v = ggml_attention.decode_output(H, H_kv, d_k, d_v, T, kv)
        want = softmax_attention(q[:, None], k, v, False)[:, 0]
        err = np.abs(o - want).max() / np.abs(want).max()
        assert err < (2e-3 if kv == "f16" else 1e-5), (H, H_kv, d_k, d_v, T, kv, err)


def check_torch():
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(1, 6, 33, 16, generator=g), torch.randn(1, 2, 33, 16, generator=g), torch.randn(1, 2, 33, 16, generator=g)
    got = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    want = softmax_attention(q[0].numpy(), k[0].numpy(), v[0].numpy(), True)
    assert np.abs(got[0].numpy() - want).max() < 1e-5
    ms, backend = torch_sdpa.forward_ms(6, 2, 16, 16, 64, "fp32", reps=1)
    assert ms > 0 and backend == "flash"
    ms, backend = torch_sdpa.decode_ms(16, 1, 192, 128, 64, "bf16", reps=1)
    assert ms > 0 and backend == "math"  # flash refuses d_k != d_v: named, not hidden


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nsa", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    check_torch()
    check_ggml_decode()
    for H, H_kv, d_k, d_v, T, kv in ((4, 2, 16, 8, 600, "f32"), (2, 1, 32, 32, 40, "f16")):  # 600: two chunks
        o, q, k, v = ggml_attention.forward_output(H, H_kv, d_k, d_v, T, kv)
        want = softmax_attention(q, k, v, True)
        err = np.abs(o - want).max() / np.abs(want).max()
        assert err < (2e-3 if kv == "f16" else 1e-5), ("forward", H, H_kv, d_k, d_v, T, kv, err)
    assert ggml_attention.forward_ms(4, 2, 16, 16, 600, "f16", 1) > 0
    out = pathlib.Path(a.workdir) / "peers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    bench_peers.main(["--nsa", a.nsa, "--shapes", "mha", "--tokens", "256", "--threads", "2", "--decode-steps", "2",
                      "--json", str(out)])
    rec = json.loads(out.read_text())
    assert rec["ggml"].startswith("ggml-python") and len(rec["results"]) == 2
    for r in rec["results"]:
        assert {"dense_fp32", "nsa_fp32", "dense_bf16", "nsa_bf16"} <= set(r["ours"])
        assert {"torch_fp32", "torch_bf16", "ggml_f32", "ggml_f16"} <= set(r["peers"])
        assert all(v["ms"] > 0 for v in r["peers"].values())
    print("bench peers: ok")


if __name__ == "__main__":
    main()
