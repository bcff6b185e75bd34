"""NativeSparseAttention: an attention layer (projections + gates + phi) around the NSA op."""
import math

import torch
from torch import nn

from ._common import phi_shapes
from .decode import DecodeCache
from .functional import native_sparse_attention

__all__ = ["NativeSparseAttention"]


class NativeSparseAttention(nn.Module):
    """NSA attention layer: x [B, T, hidden_size] -> [B, T, hidden_size].

    q = x W_q, k = x W_k, v = x W_v (per branch when ``shared_kv=False``, the paper's
    independent K/V), gates = sigmoid(x W_g) in the order (cmp, slc, win), then the NSA
    operator and the output projection W_o. The compression functions' parameters are
    ``phi_k`` / ``phi_v`` (nn.ParameterDict, shared by the kv heads).

    Init: projections as nn.Linear; phi ``pe`` ~ N(0, 0.02); ``mlp`` layers as nn.Linear
    (uniform in +-1/sqrt(fan_in)); ``linear`` starts as mean pooling (W = [I/l ... I/l]), so
    the compressed keys start as block means.

    Positions enter only through causality, the block structure and phi's ``pe`` (no
    rotary embedding is applied here; apply one to q/k outside if wanted).

    forward(x, cu_seqlens=None): with cu_seqlens (int64 [N+1]) x is [1, total, hidden]
    holding N packed sequences.
    """

    def __init__(self, hidden_size, num_heads, num_kv_heads, head_dim, head_dim_v=None, *,
                 block_len=32, stride=16, sel_block=64, top_n=16, n_init=1, n_local=2, window=512,
                 phi="mlp", phi_hidden=None, shared_kv=True, bias=False, scale=None,
                 device=None, dtype=None):
        super().__init__()
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"nsa: num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
        factory = {"device": device, "dtype": dtype}
        self.hidden_size, self.num_heads, self.num_kv_heads = hidden_size, num_heads, num_kv_heads
        self.head_dim = head_dim
        self.head_dim_v = head_dim if head_dim_v is None else head_dim_v
        self.shared_kv = shared_kv
        self.options = dict(block_len=block_len, stride=stride, sel_block=sel_block, top_n=top_n,
                            n_init=n_init, n_local=n_local, window=window, scale=scale, phi=phi)
        kv_sets = 1 if shared_kv else 3
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(hidden_size, kv_sets * num_kv_heads * head_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(hidden_size, kv_sets * num_kv_heads * self.head_dim_v, bias=bias, **factory)
        self.g_proj = nn.Linear(hidden_size, num_heads * 3, bias=True, **factory)
        self.o_proj = nn.Linear(num_heads * self.head_dim_v, hidden_size, bias=bias, **factory)
        self.phi_k = self._make_phi(phi, block_len, head_dim, phi_hidden, factory)
        self.phi_v = self._make_phi(phi, block_len, self.head_dim_v, phi_hidden, factory)

    @staticmethod
    def _make_phi(phi, l, dim, hidden, factory):
        hidden = dim if hidden is None else hidden
        params = nn.ParameterDict()
        for name, shape in phi_shapes(phi, l, dim, hidden).items():
            p = torch.empty(shape, **factory)
            with torch.no_grad():
                if name == "pe":
                    nn.init.normal_(p, std=0.02)
                elif name == "w":  # mean pooling: out = sum_r x_r / l
                    p.copy_(torch.eye(dim, **factory).repeat(1, l) / l)
                else:  # as nn.Linear: uniform in +-1/sqrt(fan_in)
                    fan_in = l * dim if name in ("w1", "b1") else hidden
                    nn.init.uniform_(p, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
            params[name] = nn.Parameter(p)
        return params

    def _project(self, x):
        """q [B,T,H,d_k], k/v [B,T,H_kv,*] of the cmp branch, per-branch K/V, gates [B,T,H,3]."""
        B, T, _ = x.shape
        H, H_kv, d_k, d_v = self.num_heads, self.num_kv_heads, self.head_dim, self.head_dim_v
        q = self.q_proj(x).view(B, T, H, d_k)
        k = self.k_proj(x).view(B, T, -1, H_kv, d_k)
        v = self.v_proj(x).view(B, T, -1, H_kv, d_v)
        g = torch.sigmoid(self.g_proj(x)).view(B, T, H, 3)
        # Per-branch K/V are strided views into one projection (last axis contiguous: no copy).
        per_branch = {} if self.shared_kv else dict(k_slc=k[:, :, 1], v_slc=v[:, :, 1],
                                                    k_win=k[:, :, 2], v_win=v[:, :, 2])
        return q, k[:, :, 0], v[:, :, 0], per_branch, g

    def forward(self, x, cu_seqlens=None):
        B, T, _ = x.shape
        q, k, v, per_branch, g = self._project(x)
        o = native_sparse_attention(
            q, k, v, g[..., 0], g[..., 1], g[..., 2], **per_branch,
            phi_k=dict(self.phi_k) or None, phi_v=dict(self.phi_v) or None,
            cu_seqlens=cu_seqlens, **self.options)
        return self.o_proj(o.reshape(B, T, -1))

    def new_cache(self, max_seqs=1, max_tokens=0, chunk_tokens=0, storage="fp32"):
        """A DecodeCache for this layer (float32 in and out; K/V stored as `storage`, "fp32" or
        "bf16"), holding a copy of its current phi weights."""
        return DecodeCache(self.num_heads, self.num_kv_heads, self.head_dim, self.head_dim_v,
                           phi_k=dict(self.phi_k) or None, phi_v=dict(self.phi_v) or None,
                           shared_kv=self.shared_kv, max_seqs=max_seqs, max_tokens=max_tokens,
                           chunk_tokens=chunk_tokens, storage=storage, **self.options)

    @torch.no_grad()
    def decode(self, x, cache, seqs=(0,)):
        """Inference with a cache from new_cache(). x [len(seqs), T, hidden] -> [len(seqs), T, hidden]:
        T == 1 appends one token to each sequence in `seqs`; T > 1 (one sequence) appends a prompt."""
        B, T, _ = x.shape
        seqs = list(seqs)
        if len(seqs) != B:
            raise ValueError(f"nsa: decode: x holds {B} sequences but seqs lists {len(seqs)}")
        q, k, v, per_branch, g = self._project(x)
        gates = (g[..., 0], g[..., 1], g[..., 2])
        if T == 1:
            at = lambda t: t[:, 0]
            o = cache.step(seqs, at(q), at(k), at(v), *(at(t) for t in gates),
                           **{n: at(t) for n, t in per_branch.items()})
            o = o[:, None]
        elif B == 1:
            at = lambda t: t[0]
            o = cache.prefill(seqs[0], at(q), at(k), at(v), *(at(t) for t in gates),
                              **{n: at(t) for n, t in per_branch.items()})[None]
        else:
            raise ValueError("nsa: decode: a prompt (T > 1) is appended to one sequence at a time")
        return self.o_proj(o.reshape(B, T, -1))

    def extra_repr(self):
        o = self.options
        return (f"hidden_size={self.hidden_size}, heads={self.num_heads}, kv_heads={self.num_kv_heads}, "
                f"d_k={self.head_dim}, d_v={self.head_dim_v}, l={o['block_len']}, d={o['stride']}, "
                f"l'={o['sel_block']}, n={o['top_n']}, w={o['window']}, phi={o['phi']}, shared_kv={self.shared_kv}")
