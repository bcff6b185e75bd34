"""Bad inputs raise Python exceptions carrying the library's message; nothing crashes.
nsa.Error is a ValueError (shapes, layouts, values, devices, parameters); a wrong dtype is a
TypeError."""
import numpy as np
import pytest
import torch

import nsa
from conftest import SMALL, make_problem, op_kwargs, positional


def call(p, **overrides):
    x = dict(p, **overrides)
    return nsa.native_sparse_attention(*positional(x), **op_kwargs(x), **SMALL)


@pytest.fixture
def p():
    return make_problem(B=2, T=40, H=4, H_kv=2, d_k=4, d_v=5, dtype=torch.float32, seed=9)


def test_error_is_a_value_error():
    assert issubclass(nsa.Error, ValueError)


@pytest.mark.parametrize("change, message", [
    (lambda p: dict(k=p["k"][:, :30]), r"k_cmp: expected shape \[2,40,2,4\], got \[2,30,2,4\]"),
    (lambda p: dict(k=torch.zeros(2, 40, 3, 4)), r"query heads H = 4 must be a multiple of key/value heads H_kv = 3"),
    (lambda p: dict(q=p["q"][0]), r"q, k, v must be \[B, T, heads, dim\]"),
    (lambda p: dict(g_slc=p["g_slc"][:, :, :2]), r"g_slc must have shape \[B, T, H\]"),
    (lambda p: dict(k_win=torch.zeros(2, 40, 2, 3)), r"k_win: expected shape \[2,40,2,4\], got \[2,40,2,3\]"),
    (lambda p: {n: p[n][:, :0] for n in ("q", "k", "v", "g_cmp", "g_slc", "g_win")}, r"q: every size must be positive"),
    (lambda p: dict(phi_k=dict(p["phi_k"], w1=torch.zeros(4, 15))), r"phi_k.w1: expected shape \[4,16\], got \[4,15\]"),
    (lambda p: dict(phi_v={k: v for k, v in p["phi_v"].items() if k != "b1"}), r"phi=mlp needs phi_v with parameters"),
    (lambda p: dict(phi_k=None), r"phi_k is None but phi=mlp needs parameters"),
    (lambda p: dict(phi_k=dict(p["phi_k"], w1=p["phi_k"]["w1"].t().contiguous().t())), r"phi_k.w1: must be contiguous"),
    (lambda p: dict(q=p["q"].clone().index_put_((torch.tensor(0),), torch.tensor(float("nan")))), r"q: non-finite value"),
    (lambda p: dict(q=torch.randn(2, 40, 4, 4).transpose(-1, -2).contiguous().transpose(-1, -2)),
     r"q: the last \(dim\) axis must be contiguous \(stride 1\)"),
    (lambda p: dict(q=p["q"][:, :1].expand(2, 40, 4, 4)), r"q: strides overlap"),
])
def test_bad_tensors_raise_the_library_message(p, change, message):
    with pytest.raises(nsa.Error, match=message):
        call(p, **change(p))


def test_head_major_layout_is_accepted_without_a_copy(p):
    # [B, H, T, d] memory (FLA's head_first) viewed as [B, T, H, d]: not an overlap.
    q_head_major = p["q"].transpose(1, 2).contiguous().transpose(1, 2)
    assert q_head_major.stride() != p["q"].stride()
    torch.testing.assert_close(call(p, q=q_head_major), call(p), rtol=0, atol=0)


def test_bad_config_raises(p):
    x = dict(p)
    with pytest.raises(nsa.Error, match=r"stride d=3 must divide block_len l=4"):
        nsa.native_sparse_attention(*positional(x), **op_kwargs(x), **dict(SMALL, stride=3))
    with pytest.raises(nsa.Error, match=r"top_n=1 must be >= n_init \+ n_local = 2"):
        nsa.native_sparse_attention(*positional(x), **op_kwargs(x), **dict(SMALL, top_n=1))
    with pytest.raises(nsa.Error, match=r"unknown phi kind 'conv'"):
        nsa.native_sparse_attention(*positional(x), **op_kwargs(x), phi="conv", **SMALL)
    with pytest.raises(nsa.Error, match=r"phi=mean takes no parameters"):
        nsa.native_sparse_attention(*positional(x), **op_kwargs(x), phi="mean", **SMALL)


@pytest.mark.parametrize("dtype, message", [
    (torch.float16, r"q has dtype float16; nsa runs float32 \(fast CPU kernels\), bfloat16 \(bf16 storage, "
                    r"fp32 compute\) or float64"),
    # bfloat16 is supported: the other inputs must then be bfloat16 too
    (torch.bfloat16, r"k_cmp has dtype float32, expected bfloat16"),
    (torch.int32, r"q has dtype int32"),
])
def test_unsupported_dtypes_raise_type_error(p, dtype, message):
    with pytest.raises(TypeError, match=message):
        call(p, q=p["q"].to(dtype))


def test_mixed_dtypes_raise_type_error(p):
    with pytest.raises(TypeError, match=r"k_cmp has dtype float64, expected float32"):
        call(p, k=p["k"].double())
    with pytest.raises(TypeError, match=r"phi_v.b2 has dtype float64, expected float32"):
        call(p, phi_v=dict(p["phi_v"], b2=p["phi_v"]["b2"].double()))


def test_other_devices_raise(p):
    with pytest.raises(nsa.Error, match=r"q is on meta; this build of nsa runs on the CPU only"):
        call(p, q=p["q"].to("meta"))
    if torch.cuda.is_available():
        with pytest.raises(nsa.Error, match=r"k is on cuda"):
            call(p, k=p["k"].cuda())


def test_bad_cu_seqlens_raise(p):
    q = dict(p, **{n: p[n][:1] for n in ("q", "k", "v", "g_cmp", "g_slc", "g_win")})
    with pytest.raises(nsa.Error, match=r"cu_seqlens: last entry 30 must equal the total token count T = 40"):
        call(q, cu_seqlens=torch.tensor([0, 10, 30]))
    with pytest.raises(nsa.Error, match=r"cu_seqlens must be non-decreasing"):
        call(q, cu_seqlens=torch.tensor([0, 30, 10, 40]))
    with pytest.raises(TypeError, match=r"cu_seqlens must be int64"):
        call(q, cu_seqlens=torch.tensor([0, 40], dtype=torch.int32))
    with pytest.raises(nsa.Error, match=r"a packed batch needs views with B = 1, got B = 2"):
        call(p, cu_seqlens=torch.tensor([0, 40]))


def test_out_argument_checks(p):
    out = torch.empty(2, 40, 4, 5)
    with pytest.raises(nsa.Error, match=r"out: expected shape \[2,40,4,5\], got \[2,40,4,4\]"):
        call(p, out=torch.empty(2, 40, 4, 4))
    with pytest.raises(RuntimeError, match=r"out= does not support automatic differentiation"):
        call(p, q=p["q"].requires_grad_(), out=out)
    # out overlapping an input would be read while written
    buf = torch.randn(2, 40, 4, 5)
    with pytest.raises(nsa.Error, match=r"out overlaps the memory of q"):
        call(p, q=buf[..., :4], out=buf)


def test_non_tensor_inputs_raise_type_error(p):
    with pytest.raises(TypeError, match=r"q must be a torch.Tensor, got list"):
        call(p, q=[[1.0]])
    with pytest.raises(TypeError, match=r"phi_k.pe: expected a torch tensor or numpy array, got str"):
        nsa._core.forward(nsa.Config(**SMALL), *[t.numpy() for t in (p["q"], p["k"], p["v"])] * 1,
                          p["k"].numpy(), p["v"].numpy(), p["k"].numpy(), p["v"].numpy(),
                          torch.stack((p["g_cmp"], p["g_slc"], p["g_win"]), -1).numpy(),
                          dict(p["phi_k"], pe="x"), p["phi_v"], None, torch.empty(2, 40, 4, 5), False)


def test_numpy_front_end_errors(p):
    arrays = [t.numpy() for t in positional(p)]
    phi = {n: {k: v.numpy() for k, v in p[n].items()} for n in ("phi_k", "phi_v")}
    with pytest.raises(TypeError, match=r"q must be a numpy.ndarray"):
        nsa.numpy.native_sparse_attention(p["q"], *arrays[1:], **phi, **SMALL)
    with pytest.raises(TypeError, match=r"k_cmp has dtype float64, expected float32"):
        nsa.numpy.native_sparse_attention(arrays[0], arrays[1].astype(np.float64), *arrays[2:], **phi, **SMALL)
    read_only = np.empty((2, 40, 4, 5), dtype=np.float32)
    read_only.flags.writeable = False
    with pytest.raises(TypeError):  # nanobind refuses a read-only array where it must write
        nsa.numpy.native_sparse_attention(*arrays, **phi, out=read_only, **SMALL)
    # numpy arrays that are not 4-D with readable errors
    with pytest.raises(nsa.Error, match=r"q, k, v must be \[B, T, heads, dim\]"):
        nsa.numpy.native_sparse_attention(arrays[0][0], *arrays[1:], **phi, **SMALL)


def test_backward_after_errors_still_works(p):
    """An error leaves nothing half-done: the next call and its backward are fine."""
    with pytest.raises(nsa.Error):
        call(p, k=p["k"][:, :30])
    x = {n: (t.clone().requires_grad_() if isinstance(t, torch.Tensor) else t) for n, t in p.items()}
    call(x).sum().backward()
    assert torch.isfinite(x["q"].grad).all()


def test_numpy_arrays_dlpack_cannot_describe_raise(p):
    """Byte-swapped arrays and fields of structured arrays have no DLPack form: TypeError.
    Negative strides reach the library, which refuses them."""
    arrays = [t.numpy() for t in positional(p)]
    phi = {n: {k: v.numpy() for k, v in p[n].items()} for n in ("phi_k", "phi_v")}
    swapped = arrays[0].astype(">f4")
    field = np.zeros(arrays[0].shape, dtype=[("a", "<f4"), ("b", "u1")])["a"]
    for q in (swapped, field):
        with pytest.raises(TypeError):
            nsa.numpy.native_sparse_attention(q, *arrays[1:], **phi, **SMALL)
    with pytest.raises(nsa.Error, match=r"q: negative strides are not supported"):
        nsa.numpy.native_sparse_attention(arrays[0][:, ::-1], *arrays[1:], **phi, **SMALL)


def test_phi_fields_come_from_the_library_table():
    # nsa/phi_fields.h: the one definition of phi's parameters, their order and shapes.
    l, dim, hidden = 4, 3, 5
    assert nsa._core.phi_fields("mlp", l, dim, hidden) == [
        ("pe", [l, dim]), ("w1", [hidden, l * dim]), ("b1", [hidden]), ("w2", [dim, hidden]), ("b2", [dim])]
    assert nsa._core.phi_fields("linear", l, dim, hidden) == [("pe", [l, dim]), ("w", [dim, l * dim])]
    assert nsa._core.phi_fields("mean", l, dim, hidden) == []
    assert nsa._common.phi_names("linear") == ("pe", "w")
    with pytest.raises(nsa.Error, match=r"unknown phi kind 'conv'"):
        nsa._common.phi_names("conv")
    layer = nsa.NativeSparseAttention(16, 2, 1, 4, block_len=4, stride=2, sel_block=4, top_n=2,
                                      n_init=1, n_local=1, window=4, phi="mlp", phi_hidden=6)
    assert {n: tuple(p.shape) for n, p in layer.phi_k.items()} == {
        "pe": (4, 4), "w1": (6, 16), "b1": (6,), "w2": (4, 6), "b2": (4,)}
