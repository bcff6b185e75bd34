"""torch.autograd.gradcheck of nsa.native_sparse_attention in float64 (the C++ reference's
backward against finite differences of its forward), on small shapes.

The selection is piecewise constant in the inputs; the random inputs here (fixed seeds) are
far from ties at the finite-difference step, so it stays fixed while gradcheck perturbs.
"""
import pytest
import torch

import nsa
from conftest import SMALL, leaves, make_problem, op_kwargs, positional

CASES = {
    # name: make_problem arguments
    "mlp-shared-G3": dict(phi="mlp", shared=True, H=3, H_kv=1),
    "mlp-independent-G1": dict(phi="mlp", shared=False, H=2, H_kv=2),
    "linear-shared-G1": dict(phi="linear", shared=True, H=2, H_kv=2),
    "linear-independent-G3": dict(phi="linear", shared=False, H=3, H_kv=1),
    "mean-shared-G3": dict(phi="mean", shared=True, H=3, H_kv=1),
    "mean-independent-G1": dict(phi="mean", shared=False, H=1, H_kv=1, B=2),
    "mlp-varlen-G3": dict(phi="mlp", shared=True, H=3, H_kv=1, T=44, cu_seqlens=[0, 30, 30, 44]),
    "mlp-hidden7-varlen-independent": dict(phi="mlp", shared=False, H=2, H_kv=1, T=40, cu_seqlens=[0, 9, 40], phi_hidden=7),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    args = CASES[name]
    p = make_problem(d_k=4, d_v=3, dtype=torch.float64, seed=1, **args)
    names = [n for n, _ in leaves(p)]
    phi = args["phi"]

    def op(*tensors):
        x = dict(p)
        for n, t in zip(names, tensors):
            if n.startswith("phi_"):
                prefix, field = n.split(".")
                x[prefix] = dict(x[prefix], **{field: t})
            else:
                x[n] = t
        return nsa.native_sparse_attention(*positional(x), **op_kwargs(x), phi=phi, **SMALL)

    inputs = tuple(t.detach().clone().requires_grad_() for _, t in leaves(p))
    assert torch.autograd.gradcheck(op, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=False)
