"""torch's scaled_dot_product_attention on the CPU, timed as a PyTorch user would call it.

Layout [B, H, T, d] (torch's), GQA through ``enable_gqa=True`` (no repeated K/V). The
backend is pinned and named: FLASH_ATTENTION (torch's CPU flash kernel; fp32, and bf16
through oneDNN where the CPU has AMX / AVX512_BF16) when it accepts the shape, else MATH
(which materialises the T x T scores; torch's flash kernel refuses d_k != d_v).
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from timing import median_ms

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}




MATH_LIMIT_BYTES = 4 << 30  # MATH materialises [H, n, T] fp32 scores: refuse more than 4 GiB


def _run(q, k, v, causal, reps):
    """(median ms, backend name) of SDPA on the first backend that accepts the inputs; the
    MATH fallback is not run past MATH_LIMIT_BYTES of scores: (nan, "math: skipped ...")."""
    for backend, name in ((SDPBackend.FLASH_ATTENTION, "flash"), (SDPBackend.MATH, "math")):
        scores = 4 * q.shape[1] * q.shape[2] * k.shape[2]
        if name == "math" and scores > MATH_LIMIT_BYTES:
            return float("nan"), f"math: skipped ({scores / 2**30:.0f} GiB of scores)"
        try:
            with sdpa_kernel([backend]):
                F.scaled_dot_product_attention(q[..., :1, :], k[..., :1, :], v[..., :1, :], is_causal=causal,
                                               enable_gqa=True)
                fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
                return median_ms(fn, reps), name
        except RuntimeError:
            continue
    raise RuntimeError("no SDPA backend accepts these inputs")


def forward_ms(H, H_kv, d_k, d_v, T, dtype, reps=3, seed=0):
    """Causal attention over T tokens, batch 1: (ms, backend)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, H, T, d_k, generator=g).to(DTYPES[dtype])
    k = torch.randn(1, H_kv, T, d_k, generator=g).to(DTYPES[dtype])
    v = torch.randn(1, H_kv, T, d_v, generator=g).to(DTYPES[dtype])
    with torch.no_grad():
        return _run(q, k, v, True, reps)


def decode_ms(H, H_kv, d_k, d_v, T, dtype, reps=16, seed=0):
    """One new query token against a cache of T tokens: (ms, backend)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, H, 1, d_k, generator=g).to(DTYPES[dtype])
    k = torch.randn(1, H_kv, T, d_k, generator=g).to(DTYPES[dtype])
    v = torch.randn(1, H_kv, T, d_v, generator=g).to(DTYPES[dtype])
    with torch.no_grad():
        return _run(q, k, v, False, reps)
