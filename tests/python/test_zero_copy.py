"""Zero-copy: the library reads the caller's buffers and writes the caller's output.

How this is checked:
  1. `out=`: the op writes into the given tensor / array and returns that very object.
  2. nsa._core.view_of reports the data address, shape and strides of the TensorView the
     binding builds over an array: for torch tensors and numpy arrays, contiguous or strided,
     the address is the array's own (no staging copy; strides passed through).
  3. The arrays the Python front ends hand to nsa._core.forward are recorded (a spy around
     it): their data addresses are those of the caller's q, k, v and phi parameters, also
     for strided views and inside autograd.
  4. Mutating an input in place and calling again changes the output as recomputing does.
"""
import numpy as np
import pytest
import torch

import nsa
import nsa.functional
from conftest import SMALL, make_problem, op_kwargs, positional


def test_out_tensor_is_written_in_place():
    p = make_problem(dtype=torch.float32, seed=5)
    out = torch.full((1, 40, 3, 5), float("nan"))
    ptr = out.data_ptr()
    res = nsa.native_sparse_attention(*positional(p), **op_kwargs(p), out=out, **SMALL)
    assert res is out and out.data_ptr() == ptr
    expected = nsa.native_sparse_attention(*positional(p), **op_kwargs(p), **SMALL)
    assert torch.equal(out, expected)


def test_numpy_out_is_written_in_place():
    p = make_problem(dtype=torch.float32, seed=5)
    arrays = [t.numpy() for t in positional(p)]
    phi = {n: {k: v.numpy() for k, v in p[n].items()} for n in ("phi_k", "phi_v")}
    out = np.full((1, 40, 3, 5), np.nan, dtype=np.float32)
    res = nsa.numpy.native_sparse_attention(*arrays, **phi, out=out, **SMALL)
    assert res is out
    expected = nsa.native_sparse_attention(*positional(p), **op_kwargs(p), **SMALL)
    np.testing.assert_array_equal(out, expected.numpy())


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_views_are_over_the_callers_memory(kind):
    base = torch.randn(2, 10, 4, 12, dtype=torch.float64)
    strided = base[:, ::2, 1:3, 2:8]  # every other token, 2 of 4 heads, a slice of the dim axis
    for t in (base, strided):
        a = t if kind == "torch" else t.numpy()
        address, shape, strides = nsa._core.view_of(a)
        assert address == t.data_ptr()
        assert shape == tuple(t.shape) and strides == tuple(t.stride()[:3])


def _record_forward(monkeypatch):
    calls = []
    real = nsa._core.forward

    def spy(config, *arrays):
        calls.append([a.data_ptr() if isinstance(a, torch.Tensor) else a for a in arrays])
        return real(config, *arrays)

    monkeypatch.setattr(nsa.functional._core, "forward", spy)
    return calls


@pytest.mark.parametrize("requires_grad", [False, True])
def test_op_hands_the_callers_buffers_to_the_library(monkeypatch, requires_grad):
    p = make_problem(H=4, H_kv=2, dtype=torch.float32, seed=6, shared=False)
    # Strided inputs: q, k and v are views into larger buffers (last axis contiguous).
    q_buf = torch.randn(1, 40, 4, 16)
    kv_buf = torch.randn(1, 40, 2, 2, 8)
    p["q"], p["k"], p["v"] = q_buf[..., 4:8], kv_buf[:, :, :, 0, :4], kv_buf[:, :, :, 1, 3:8]
    if requires_grad:
        for n in ("q", "k", "v"):
            p[n].requires_grad_()
    calls = _record_forward(monkeypatch)
    o = nsa.native_sparse_attention(*positional(p), **op_kwargs(p), **SMALL)
    (ptrs,) = calls
    q, k, v, k_slc, v_slc, k_win, v_win, gates, phi_k, phi_v = ptrs[:10]
    assert (q, k, v) == (p["q"].data_ptr(), p["k"].data_ptr(), p["v"].data_ptr())
    assert (k_slc, v_slc, k_win, v_win) == tuple(p[n].data_ptr() for n in ("k_slc", "v_slc", "k_win", "v_win"))
    for got, want in ((phi_k, p["phi_k"]), (phi_v, p["phi_v"])):
        assert {n: t.data_ptr() for n, t in got.items()} == {n: t.data_ptr() for n, t in want.items()}
    # Same result as on contiguous copies.
    c = {n: (t.contiguous().detach() if isinstance(t, torch.Tensor) else t) for n, t in p.items()}
    assert torch.equal(o.detach(), nsa.native_sparse_attention(*positional(c), **op_kwargs(c), **SMALL))


def test_shared_kv_passes_one_buffer_to_every_branch(monkeypatch):
    p = make_problem(dtype=torch.float32, seed=7)
    calls = _record_forward(monkeypatch)
    nsa.native_sparse_attention(*positional(p), **op_kwargs(p), **SMALL)
    q, k, v, k_slc, v_slc, k_win, v_win = calls[0][:7]
    assert k == k_slc == k_win == p["k"].data_ptr() and v == v_slc == v_win == p["v"].data_ptr()


def test_library_reads_the_current_contents():
    """Mutate an input in place and call again: the output follows (nothing stale is cached)."""
    p = make_problem(dtype=torch.float32, seed=8)
    before = nsa.native_sparse_attention(*positional(p), **op_kwargs(p), **SMALL)
    with torch.no_grad():
        p["v"].mul_(2.0)
        p["phi_v"]["b2"].add_(1.0)
    after = nsa.native_sparse_attention(*positional(p), **op_kwargs(p), **SMALL)
    fresh = {n: (t.clone() if isinstance(t, torch.Tensor) else t) for n, t in p.items()}
    assert not torch.equal(before, after)
    assert torch.equal(after, nsa.native_sparse_attention(*positional(fresh), **op_kwargs(fresh), **SMALL))
