"""Calls from several Python threads at once (the binding releases the GIL while the
library computes) give the results of calling one at a time."""
import threading

import torch

import nsa
from conftest import SMALL, make_problem, op_kwargs, positional


def test_concurrent_calls_match_serial_calls():
    problems = [make_problem(B=1, T=64, H=4, H_kv=2, d_k=8, d_v=8, dtype=dtype, seed=20 + i)
                for i, dtype in enumerate([torch.float32, torch.float64] * 2)]
    expected = [nsa.native_sparse_attention(*positional(p), **op_kwargs(p), **SMALL) for p in problems]
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(5):
                results[i] = nsa.native_sparse_attention(*positional(problems[i]), **op_kwargs(problems[i]), **SMALL)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, e in enumerate(expected):
        assert torch.equal(results[i], e)


def test_fp32_backward_is_reproducible():
    """Spec, "Backward": deterministic for a given thread count (no atomics whose order varies)."""
    p = make_problem(B=2, T=96, H=4, H_kv=2, d_k=8, d_v=8, dtype=torch.float32, shared=False, seed=30)

    def grads():
        x = {n: (t.clone().requires_grad_() if isinstance(t, torch.Tensor) and n != "cu_seqlens" else t)
             for n, t in p.items()}
        for prefix in ("phi_k", "phi_v"):
            x[prefix] = {k: v.clone().requires_grad_() for k, v in p[prefix].items()}
        nsa.native_sparse_attention(*positional(x), **op_kwargs(x), **SMALL).square().sum().backward()
        return [t.grad for t in positional(x)] + [v.grad for pre in ("phi_k", "phi_v") for v in x[pre].values()]

    first = grads()
    for _ in range(3):
        assert all(torch.equal(a, b) for a, b in zip(first, grads()))
