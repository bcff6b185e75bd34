"""bfloat16 tensors through the package (bf16 storage, fp32 compute; spec tolerance 1e-2):

- native_sparse_attention: the output is bfloat16 and within 1e-2 of the float64 reference
  run on the same (bf16) values; the gradients of every input, computed in fp32 by the bf16
  backward and returned as bfloat16, within 1e-2 of float64 autograd's; at T where every
  selection block is chosen (so that a near-tie cannot swap a block between the two runs:
  the C++ tests cover the selection itself), T not a multiple of any block, G = 1 and 3,
  d_k != d_v, shared and independent K/V, varlen, the three phi forms;
- the bf16 output is the fp32 kernels' result on the widened values rounded once;
- the tensors are read in place (DLPack, no copies);
- NativeSparseAttention in bfloat16 (module.to(torch.bfloat16)) trains: bf16 gradients for
  every parameter, close to the float32 layer's on the same weights;
- DecodeCache takes and returns bfloat16 tensors (widened as they come in);
- mixing bfloat16 with another dtype is a TypeError naming the tensor.
"""
import pytest
import torch

import nsa
from conftest import SMALL, leaves, make_problem, op_kwargs, positional, rel_err

BF16_TOL = 1e-2


def grad_err(x, ref, scale):
    """||x - ref|| / max(||ref||, 1e-2 scale), scale the case's largest gradient norm. A
    gradient that is zero by structure (phi_k's b2, the linear phi's pe: a shift of every
    compressed key, which the softmax ignores) is rounding noise; on a CPU with AVX512_BF16
    the bf16 forward rounds P to bf16 in P V, so that noise is of order 2^-9 of the other
    gradients (the C++ bf16 backward test measures it): it must stay under 1e-4 of scale."""
    x, ref = x.detach().double(), ref.detach().double()
    return (x - ref).norm().item() / max(ref.norm().item(), 1e-2 * scale)


def as_dtype(p, dtype, requires_grad=False):
    """The problem's tensors in dtype (values already bf16-representable), as fresh leaves."""
    out = {}
    for n, t in p.items():
        if isinstance(t, dict):
            out[n] = {k: v.to(dtype).detach().requires_grad_(requires_grad) for k, v in t.items()}
        elif n == "cu_seqlens" or t is None:
            out[n] = t
        else:
            out[n] = t.to(dtype).detach().requires_grad_(requires_grad)
    return out


def bf16_problem(**kw):
    """make_problem in bfloat16: the float64 problem rounded to bf16, and that float64 copy."""
    p16 = as_dtype(make_problem(dtype=torch.float64, **kw), torch.bfloat16)
    return p16, as_dtype(p16, torch.float64)


CASES = [
    dict(T=21, H=3, H_kv=1, d_k=8, d_v=6, seed=1),                                  # G = 3, d_k != d_v
    dict(T=23, H=2, H_kv=2, d_k=5, d_v=7, shared=False, seed=2),                   # G = 1, odd dims
    dict(B=2, T=17, H=4, H_kv=2, d_k=16, d_v=16, phi="linear", seed=3),
    dict(T=19, H=3, H_kv=1, d_k=8, d_v=8, phi="mean", shared=False, seed=4),
    dict(T=30, H=3, H_kv=1, d_k=8, d_v=4, cu_seqlens=[0, 7, 7, 24, 30], seed=5),   # varlen, an empty one
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items() if k != "cu_seqlens"))
def test_bf16_forward_and_backward_match_float64_on_the_same_values(case):
    phi = case.get("phi", "mlp")
    p16, p64 = bf16_problem(**case)
    for p in (p16, p64):
        for _, t in leaves(p):
            t.requires_grad_(True)
    o16 = nsa.native_sparse_attention(*positional(p16), **op_kwargs(p16), phi=phi, **SMALL)
    o64 = nsa.native_sparse_attention(*positional(p64), **op_kwargs(p64), phi=phi, **SMALL)
    assert o16.dtype == torch.bfloat16
    assert rel_err(o16, o64) < BF16_TOL
    d_out = torch.randn(o64.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    (o16.float() * d_out.to(torch.bfloat16).float()).sum().backward()
    (o64 * d_out.to(torch.bfloat16).double()).sum().backward()
    scale = max(t64.grad.norm().item() for _, t64 in leaves(p64))
    for (name, t16), (_, t64) in zip(leaves(p16), leaves(p64)):
        assert t16.grad is not None and t16.grad.dtype == torch.bfloat16, name
        assert torch.isfinite(t16.grad.float()).all(), name
        assert grad_err(t16.grad, t64.grad, scale) < BF16_TOL, name


def test_bf16_output_is_the_fp32_result_rounded_once():
    p16, _ = bf16_problem(T=60, H=4, H_kv=2, d_k=8, d_v=8, seed=6)  # selection active
    p32 = as_dtype(p16, torch.float32)
    with torch.no_grad():
        o16 = nsa.native_sparse_attention(*positional(p16), **op_kwargs(p16), **SMALL)
        o32 = nsa.native_sparse_attention(*positional(p32), **op_kwargs(p32), **SMALL)
        # out= in bfloat16 and in float32 (the library's own output dtype for bf16 inputs)
        into16 = torch.empty_like(o16)
        into32 = torch.empty(o16.shape, dtype=torch.float32)
        nsa.native_sparse_attention(*positional(p16), **op_kwargs(p16), **SMALL, out=into16)
        nsa.native_sparse_attention(*positional(p16), **op_kwargs(p16), **SMALL, out=into32)
    # Without vdpbf16ps the bf16 kernels widen to fp32 and differ from the fp32 ones only by
    # Kc/Vc rounded to bf16; with it, also by P rounded to bf16: within the bf16 tolerance.
    assert rel_err(o16, o32) < BF16_TOL
    assert torch.equal(into16, o16) and torch.equal(into32.to(torch.bfloat16), o16)
    with pytest.raises(TypeError, match="out has dtype torch.float64"):
        nsa.native_sparse_attention(*positional(p16), **op_kwargs(p16), **SMALL,
                                    out=torch.empty(o16.shape, dtype=torch.float64))


def test_bf16_tensors_are_read_in_place():
    q = torch.randn(2, 9, 3, 8).to(torch.bfloat16)
    addr, shape, strides = nsa._core.view_of(q, "q")
    assert addr == q.data_ptr() and shape == (2, 9, 3, 8) and strides == (9 * 3 * 8, 3 * 8, 8)
    t = q.transpose(1, 2)  # [B, H, T, d]: strided, still in place
    addr, _, strides = nsa._core.view_of(t, "q")
    assert addr == t.data_ptr() and strides == (9 * 3 * 8, 8, 3 * 8)


def test_mixing_bf16_with_another_dtype_is_a_type_error_naming_the_tensor():
    p16, _ = bf16_problem(T=12, H=2, H_kv=1, d_k=4, d_v=4, seed=7)
    p16["v"] = p16["v"].float()
    with pytest.raises(TypeError, match="v_cmp has dtype float32, expected bfloat16"):
        nsa.native_sparse_attention(*positional(p16), **op_kwargs(p16), **SMALL)


def test_layer_in_bf16_trains_with_bf16_gradients():
    torch.manual_seed(0)
    layer32 = nsa.NativeSparseAttention(16, 4, 2, 8, shared_kv=False, **SMALL)
    layer16 = nsa.NativeSparseAttention(16, 4, 2, 8, shared_kv=False, **SMALL).to(torch.bfloat16)
    layer16.load_state_dict({k: v.to(torch.bfloat16) for k, v in layer32.state_dict().items()})
    layer32.load_state_dict({k: v.float() for k, v in layer16.state_dict().items()})  # the same values
    x = torch.randn(2, 20, 16).to(torch.bfloat16)  # T = 20: every selection block chosen
    y16, y32 = layer16(x), layer32(x.float())
    assert y16.dtype == torch.bfloat16 and rel_err(y16, y32) < BF16_TOL
    target = torch.randn(y32.shape)
    ((y16.float() - target) ** 2).mean().backward()
    ((y32 - target) ** 2).mean().backward()
    for (name, a), (_, b) in zip(layer16.named_parameters(), layer32.named_parameters()):
        assert a.grad is not None and a.grad.dtype == torch.bfloat16, name
        # phi_k.b2 has no gradient by structure (a shift of every compressed key)
        if not name.endswith("phi_k.b2"):
            assert rel_err(a.grad, b.grad) < 2 * BF16_TOL, name
    opt = torch.optim.SGD(layer16.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = ((layer16(x).float() - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_decode_cache_takes_and_returns_bf16():
    p16, _ = bf16_problem(T=40, H=4, H_kv=2, d_k=8, d_v=6, seed=8)
    p32 = as_dtype(p16, torch.float32)
    H, d_k = p16["q"].shape[2:]
    H_kv, d_v = p16["v"].shape[2:]
    make = lambda p: nsa.DecodeCache(H, H_kv, d_k, d_v, phi_k=p["phi_k"], phi_v=p["phi_v"], **SMALL)
    c16, c32 = make(p16), make(p32)
    o16 = c16.prefill(0, *(t[0, :25] for t in positional(p16)))
    o32 = c32.prefill(0, *(t[0, :25] for t in positional(p32)))
    assert o16.dtype == torch.bfloat16 and torch.equal(o16, o32.to(torch.bfloat16))
    for t in range(25, 40):
        s16 = c16.step([0], *(x[:, t] for x in positional(p16)))
        s32 = c32.step([0], *(x[:, t] for x in positional(p32)))
        assert s16.dtype == torch.bfloat16 and torch.equal(s16, s32.to(torch.bfloat16)), t
    out = torch.empty(1, H, d_v, dtype=torch.bfloat16)
    c16.append(0, p16["k"][0, :1], p16["v"][0, :1])  # bf16 K/V appended too
    c32.append(0, p32["k"][0, :1], p32["v"][0, :1])
    got = c16.step([0], *(x[:, 39] for x in positional(p16)), out=out)
    assert got is out and torch.equal(out, c32.step([0], *(x[:, 39] for x in positional(p32))).to(torch.bfloat16))
