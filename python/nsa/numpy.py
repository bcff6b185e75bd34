"""NumPy front end: the NSA forward pass on numpy arrays (no torch needed).

Arrays are read in place (DLPack, no copies) when their last axis is contiguous; the
result is written into ``out`` when given. float32 runs the fast CPU kernels, float64
the float64 reference.
"""
import numpy as np

from . import _core
from ._common import check_phi_dict, make_config, phi_hidden_of

__all__ = ["native_sparse_attention"]


def native_sparse_attention(q, k, v, g_cmp, g_slc, g_win, *, k_slc=None, v_slc=None, k_win=None,
                            v_win=None, phi_k=None, phi_v=None, block_len=32, stride=16, sel_block=64,
                            top_n=16, n_init=1, n_local=2, window=512, scale=None, phi="mlp",
                            cu_seqlens=None, out=None):
    """NSA forward on numpy arrays; same arguments and meaning as nsa.native_sparse_attention.

    q [B,T,H,d_k], k [B,T,H_kv,d_k], v [B,T,H_kv,d_v] (or [total, heads, dim] with
    cu_seqlens), gates [B,T,H] each; phi_k / phi_v: dicts of numpy arrays (None for
    phi="mean"). Returns o [B,T,H,d_v] (``out`` itself when given).
    """
    arrays = {"q": q, "k": k, "v": v, "g_cmp": g_cmp, "g_slc": g_slc, "g_win": g_win}
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray):
            raise TypeError(f"nsa: {name} must be a numpy.ndarray, got {type(a).__name__}")
    phi_k, phi_v = check_phi_dict(phi_k, phi, "phi_k"), check_phi_dict(phi_v, phi, "phi_v")
    packed = cu_seqlens is not None and q.ndim == 3
    lift = (lambda a: None if a is None else a[None]) if packed else (lambda a: a)
    q, k, v, k_slc, v_slc, k_win, v_win = (lift(a) for a in (q, k, v, k_slc, v_slc, k_win, v_win))
    if cu_seqlens is not None:
        cu_seqlens = np.ascontiguousarray(cu_seqlens, dtype=np.int64)
    if q.ndim != 4 or v.ndim != 4:
        raise _core.Error(f"nsa: q, k, v must be [B, T, heads, dim] (or [total, heads, dim] with cu_seqlens), "
                          f"got shapes {list(q.shape)}, {list(k.shape)}, {list(v.shape)}")
    gates = np.stack((g_cmp, g_slc, g_win), axis=-1)
    if packed:
        gates = gates[None]
    if out is None:
        out = np.empty(q.shape[:3] + (v.shape[-1],), dtype=q.dtype)
        target = out
    else:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"nsa: out must be a numpy.ndarray, got {type(out).__name__}")
        target = out[None] if packed else out
    hidden = phi_hidden_of(phi, phi_k, phi_v, q.shape[-1], v.shape[-1])
    config = make_config(block_len, stride, sel_block, top_n, n_init, n_local, window, scale, phi, hidden)
    pick = lambda own, shared: shared if own is None else own
    _core.forward(config, q, k, v, pick(k_slc, k), pick(v_slc, v), pick(k_win, k), pick(v_win, v),
                  gates, phi_k, phi_v, cu_seqlens, target, False)
    return out[0] if packed and target is out else out
