"""The NSA operator for PyTorch: `native_sparse_attention` and its autograd Function.

Tensors are handed to the C++ library through DLPack: q, k, v (and per-branch K/V), the
phi parameters and `out` are read and written in place, never copied. The three gates are
stacked into one [B, T, H, 3] tensor (the library's layout; 3 numbers per token and head).
"""
import torch

from . import _core
from ._common import check_phi_dict, make_config, phi_hidden_of, phi_names

__all__ = ["native_sparse_attention", "NativeSparseAttentionFunction"]


def _check_device(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"nsa: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise _core.Error(f"nsa: {name} is on {t.device}; this build of nsa runs on the CPU only "
                          "(built with NSA_CUDA=OFF): move it to the CPU first")


def _out_dtype(dtype):
    """The dtype the library writes outputs and gradients in: float32 for bfloat16 inputs
    (bf16 storage, fp32 compute), else the inputs' own."""
    return torch.float32 if dtype == torch.bfloat16 else dtype


def _arr(t):
    """The tensor as the binding sees it: detached (DLPack refuses tensors that require grad), same memory."""
    return None if t is None else t.detach()


def _phi_dict(names, tensors):
    return {n: _arr(t) for n, t in zip(names, tensors)} if names else None


def _run_backward(saved, inputs, cu_seqlens, d_out, grads, dphi):
    """Calls _core.backward; inputs = (q, k_cmp, v_cmp, k_slc, v_slc, k_win, v_win, gates, phi_k, phi_v)."""
    q, k_cmp, v_cmp, k_slc, v_slc, k_win, v_win, gates, phi_k, phi_v = inputs
    _core.backward(saved, q, k_cmp, v_cmp, k_slc, v_slc, k_win, v_win, gates, phi_k, phi_v,
                   cu_seqlens, d_out, *grads, *dphi)


class NativeSparseAttentionFunction(torch.autograd.Function):
    """autograd.Function around the C++ forward and backward.

    apply(config, cu_seqlens, n_phi_k, q, k, v, k_slc, v_slc, k_win, v_win, gates, *phi)
    k_slc, v_slc, k_win, v_win may be None: that branch uses k / v (shared K/V), and the
    gradient written for k / v is then the sum over the branches that share it. phi holds
    phi_k's parameters (n_phi_k of them, in the order of _common.phi_names) then phi_v's.
    The backward pass reuses the forward's selection (it is piecewise constant: no
    gradient flows through it) and calls the C++ backward once.
    """

    @staticmethod
    def forward(ctx, config, cu_seqlens, n_phi_k, q, k, v, k_slc, v_slc, k_win, v_win, gates, *phi):
        names = phi_names(config.phi)
        phi_k, phi_v = _phi_dict(names, phi[:n_phi_k]), _phi_dict(names, phi[n_phi_k:])
        ks, vs = (k if k_slc is None else k_slc), (v if v_slc is None else v_slc)
        kw, vw = (k if k_win is None else k_win), (v if v_win is None else v_win)
        B, T, H, _ = q.shape
        out = q.new_empty((B, T, H, v.shape[-1]), dtype=_out_dtype(q.dtype))
        saved = _core.forward(config, _arr(q), _arr(k), _arr(v), _arr(ks), _arr(vs), _arr(kw),
                              _arr(vw), _arr(gates), phi_k, phi_v, cu_seqlens, out, True)
        ctx.config, ctx.cu_seqlens, ctx.n_phi_k, ctx.state = config, cu_seqlens, n_phi_k, saved
        ctx.own = (k_slc is not None, v_slc is not None, k_win is not None, v_win is not None)
        ctx.save_for_backward(q, k, v, ks, vs, kw, vw, gates, *phi)
        return out.to(q.dtype)  # bfloat16 inputs: the fp32 output rounded once

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out):
        q, k, v, ks, vs, kw, vw, gates, *phi = ctx.saved_tensors
        names = phi_names(ctx.config.phi)
        phi_k, phi_v = _phi_dict(names, phi[: ctx.n_phi_k]), _phi_dict(names, phi[ctx.n_phi_k:])
        grad_dtype = _out_dtype(q.dtype)  # bfloat16 inputs: fp32 gradients, rounded at the end
        d_out = d_out.to(grad_dtype).contiguous()  # autograd may hand in an expanded or strided tensor
        # Gradient buffers: contiguous, uninitialised (the library overwrites every element).
        new = lambda t: torch.empty(t.shape, dtype=grad_dtype)
        dq, dk, dv, dgates = new(q), new(k), new(v), new(gates)
        own_ks, own_vs, own_kw, own_vw = ctx.own
        # Shared K/V: the same gradient buffer for every branch that shares the tensor, so the
        # library writes the sum (include/nsa/backward.h).
        dks = new(ks) if own_ks else dk
        dvs = new(vs) if own_vs else dv
        dkw = new(kw) if own_kw else dk
        dvw = new(vw) if own_vw else dv
        dphi = [new(p) for p in phi]
        inputs = tuple(_arr(t) for t in (q, k, v, ks, vs, kw, vw, gates)) + (phi_k, phi_v)
        grads = (dq, dk, dv, dks, dvs, dkw, dvw, dgates)
        dphi_k, dphi_v = _phi_dict(names, dphi[: ctx.n_phi_k]), _phi_dict(names, dphi[ctx.n_phi_k:])
        _run_backward(ctx.state, inputs, ctx.cu_seqlens, d_out, grads, (dphi_k, dphi_v))
        cast = lambda g: g.to(q.dtype)  # a no-op unless the inputs are bfloat16
        dq, dk, dv, dks, dvs, dkw, dvw, dgates = (cast(g) for g in (dq, dk, dv, dks, dvs, dkw, dvw, dgates))
        return (None, None, None, dq, dk, dv, dks if own_ks else None, dvs if own_vs else None,
                dkw if own_kw else None, dvw if own_vw else None, dgates, *(cast(g) for g in dphi))


def native_sparse_attention(q, k, v, g_cmp, g_slc, g_win, *, k_slc=None, v_slc=None, k_win=None,
                            v_win=None, phi_k=None, phi_v=None, block_len=32, stride=16, sel_block=64,
                            top_n=16, n_init=1, n_local=2, window=512, scale=None, phi="mlp",
                            cu_seqlens=None, out=None):
    r"""Native Sparse Attention (Yuan et al., 2025) as specified in ../shared/docs/nsa-spec.md.

    o = g_cmp * o_cmp + g_slc * o_slc + g_win * o_win, per token and query head, where
    o_cmp attends to phi-compressed blocks of K/V, o_slc to the ``top_n`` highest-scoring
    selection blocks (scores from the compression branch's attention, shared by the heads
    of a group), and o_win to the last ``window`` tokens. Causal; differentiable.

    Args:
        q: [B, T, H, d_k] queries.
        k: [B, T, H_kv, d_k], v: [B, T, H_kv, d_v] keys and values; H a multiple of H_kv
            (GQA, G = H / H_kv >= 1); d_v may differ from d_k. Used for every branch whose
            own K/V is not given (shared K/V: its gradient is the sum over those branches).
        g_cmp, g_slc, g_win: [B, T, H] gates of the three branches, already in [0, 1]
            (the caller applies the sigmoid).
        k_slc, v_slc, k_win, v_win: optional per-branch keys/values (the paper's independent
            K/V); k and v are then those of the compression branch.
        phi_k, phi_v: dicts of the compression functions' parameters, shared by all kv heads:
            ``mlp``: pe [l, dim], w1 [hidden, l*dim], b1 [hidden], w2 [dim, hidden], b2 [dim];
            ``linear``: pe [l, dim], w [dim, l*dim]; ``mean``: None. dim is d_k for phi_k and
            d_v for phi_v; hidden defaults to dim.
        block_len, stride: compression block length l and stride d (d divides l).
        sel_block: selection block length l' (l divides l'). top_n: blocks chosen per query,
            the ``n_init`` first and ``n_local`` most recent ones included.
        window: sliding-window length in tokens, the current one included.
        scale: softmax scale, default 1/sqrt(d_k). phi: "mlp", "linear" or "mean".
        cu_seqlens: int64 [N+1] offsets of N packed sequences; then q/k/v/gates are
            [1, total, ...] (or [total, ...]) and every position rule restarts per sequence.
        out: optional [B, T, H, d_v] tensor written in place and returned (inference only:
            not allowed when an input requires grad).

    Returns:
        o: [B, T, H, d_v], dtype of q (``out``, when given, must have that dtype too).

    dtype: float32 runs the fast fp32 CPU kernels; bfloat16 runs them on bf16 storage with
    fp32 accumulation (the spec's bf16 tolerance, 1e-2 relative; the output and the
    gradients are computed in fp32 and rounded to bfloat16 once, at the end); float64 runs
    the library's float64 reference (the spec in code, single-threaded), which is what makes
    ``torch.autograd.gradcheck`` possible. All floating-point inputs share q's dtype.

    Memory: q, k, v, per-branch K/V, phi parameters and ``out`` are read and written in place
    through DLPack (no copies) as long as their last axis is contiguous; other strides are
    passed through. The gates are stacked into one [B, T, H, 3] tensor (a small copy).

    Conventions: FLA's ``parallel_nsa`` (flash-linear-attention) argument order and layout
    ([B, T, H, d], gates [B, T, H], ``cu_seqlens`` with B = 1, ``scale``). Differences:
    ``g_win`` is FLA's ``g_swa``; ``sel_block`` is FLA's ``block_size``; ``top_n`` is FLA's
    ``block_counts`` (an int only); ``window`` is FLA's ``window_size`` but always >= 1 (the
    window branch cannot be switched off: use g_win = 0); compression here is a learnable
    phi over overlapping blocks (``block_len``, ``stride``) rather than mean pooling over
    selection blocks (``phi="mean"`` gives pooling); no ``block_indices`` (the selection is
    always computed), no ``head_first`` flag (pass ``x.transpose(1, 2)`` of head-major tensors:
    any stride order is read in place); per-branch K/V are accepted. Errors raise nsa.Error
    (a ValueError) or TypeError with the library's message.
    """
    tensors = {"q": q, "k": k, "v": v, "g_cmp": g_cmp, "g_slc": g_slc, "g_win": g_win}
    tensors.update({n: t for n, t in (("k_slc", k_slc), ("v_slc", v_slc), ("k_win", k_win), ("v_win", v_win)) if t is not None})
    for name, t in tensors.items():
        _check_device(name, t)
    phi_k, phi_v = check_phi_dict(phi_k, phi, "phi_k"), check_phi_dict(phi_v, phi, "phi_v")
    names = phi_names(phi)
    for name, params in (("phi_k", phi_k), ("phi_v", phi_v)):
        if params is not None and sorted(params) != sorted(names):
            raise _core.Error(f"nsa: phi={phi} needs {name} with parameters {', '.join(names)}, got {', '.join(sorted(params))}")
    phi_tensors = [phi_k[n] for n in names] + [phi_v[n] for n in names] if names else []
    n_phi_k = len(names)
    for i, t in enumerate(phi_tensors):
        _check_device(("phi_k." if i < n_phi_k else "phi_v.") + names[i % n_phi_k], t)

    packed = cu_seqlens is not None and q.dim() == 3
    if packed:  # [total, heads, dim] -> [1, total, heads, dim] (views)
        q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
        g_cmp, g_slc, g_win = g_cmp.unsqueeze(0), g_slc.unsqueeze(0), g_win.unsqueeze(0)
        k_slc, v_slc, k_win, v_win = (None if t is None else t.unsqueeze(0) for t in (k_slc, v_slc, k_win, v_win))
    if cu_seqlens is not None:
        if not isinstance(cu_seqlens, torch.Tensor):
            cu_seqlens = torch.as_tensor(cu_seqlens, dtype=torch.int64)
        _check_device("cu_seqlens", cu_seqlens)
        if cu_seqlens.dtype != torch.int64:
            raise TypeError(f"nsa: cu_seqlens must be int64, got {cu_seqlens.dtype}")
        cu_seqlens = cu_seqlens.contiguous()
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise _core.Error(f"nsa: q, k, v must be [B, T, heads, dim] (or [total, heads, dim] with cu_seqlens), "
                          f"got shapes {list(q.shape)}, {list(k.shape)}, {list(v.shape)}")
    for name, g in (("g_cmp", g_cmp), ("g_slc", g_slc), ("g_win", g_win)):
        if g.dim() != 3 or g.shape != q.shape[:3]:
            raise _core.Error(f"nsa: {name} must have shape [B, T, H] = {list(q.shape[:3])}, got {list(g.shape)}")
    gates = torch.stack((g_cmp, g_slc, g_win), dim=-1)
    hidden = phi_hidden_of(phi, phi_k, phi_v, q.shape[-1], v.shape[-1])
    config = make_config(block_len, stride, sel_block, top_n, n_init, n_local, window, scale, phi, hidden)

    if out is not None:
        _check_device("out", out)
        if torch.is_grad_enabled() and any(t.requires_grad for t in list(tensors.values()) + phi_tensors):
            raise RuntimeError("nsa: out= does not support automatic differentiation (an input requires "
                               "grad); call without out=, or under torch.no_grad()")
        if out.dtype not in (q.dtype, _out_dtype(q.dtype)):
            raise TypeError(f"nsa: out has dtype {out.dtype}, expected q's ({q.dtype})")
        target = out.unsqueeze(0) if packed else out
        if out.dtype != _out_dtype(q.dtype):  # bfloat16: the library writes fp32, rounded into out
            target = torch.empty(target.shape, dtype=_out_dtype(q.dtype))
        ks, vs = (k if k_slc is None else k_slc), (v if v_slc is None else v_slc)
        kw, vw = (k if k_win is None else k_win), (v if v_win is None else v_win)
        _core.forward(config, _arr(q), _arr(k), _arr(v), _arr(ks), _arr(vs), _arr(kw), _arr(vw),
                      _arr(gates), _phi_dict(names, phi_tensors[:n_phi_k]),
                      _phi_dict(names, phi_tensors[n_phi_k:]), cu_seqlens, _arr(target), False)
        if target.dtype != out.dtype:
            out.copy_(target.view(out.shape))
        return out

    o = NativeSparseAttentionFunction.apply(config, cu_seqlens, n_phi_k, q, k, v, k_slc, v_slc,
                                            k_win, v_win, gates, *phi_tensors)
    return o.squeeze(0) if packed else o
