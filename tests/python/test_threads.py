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
