"""The three attention kinds the encoder is compared with, at equal parameters.

Every kind maps x [S, L, hidden] to [S, L, hidden], causally, and owns the same four
projections as nsa.NativeSparseAttention: q_proj [hidden -> H * d], k_proj and v_proj
[hidden -> H_kv * d], o_proj [H * d -> hidden], all without bias (grouped-query attention
when H_kv < H), and the same softmax scale (default 1 / sqrt(d)).

  full    softmax attention over every token up to the current one (torch SDPA).
  window  the same over the last `window` tokens only (the current one included): the
          sliding-window attention of Longformer / Mistral, exact, in O(L * window).
  nsa     nsa.NativeSparseAttention: compression + selection + the same window, mixed by
          gates. It owns, on top of the four projections, g_proj [hidden -> 3H, with bias]
          and the compression functions phi_k, phi_v (phi="linear": pe [l, d], w [d, l*d]
          each; phi="mlp": pe, w1 [d, l*d], b1 [d], w2 [d, d], b2 [d]).
Sequences shorter than L are right-padded (edge_tokens.py): causality alone keeps every real
token from seeing padding, so no kind needs a mask or a packed (cu_seqlens) batch, and all
three do the same work on the same [S, L] batch.
"""
import torch
import torch.nn.functional as F
from torch import nn

import nsa

__all__ = ["KINDS", "make_attention", "FullAttention", "WindowAttention", "NSAAttention"]

KINDS = ("nsa", "full", "window")


class FullAttention(nn.Module):
    def __init__(self, hidden, num_heads, num_kv_heads, head_dim, scale=None):
        super().__init__()
        self.scale = scale  # softmax scale; None: 1 / sqrt(head_dim)
        if num_heads % num_kv_heads:
            raise ValueError(f"attention: num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}")
        self.h, self.h_kv, self.d = num_heads, num_kv_heads, head_dim
        self.q_proj = nn.Linear(hidden, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden, bias=False)

    def _qkv(self, x):
        """q [S, H, L, d], k and v [S, H_kv, L, d]."""
        S, L, _ = x.shape
        q = self.q_proj(x).view(S, L, self.h, self.d).transpose(1, 2)
        k = self.k_proj(x).view(S, L, self.h_kv, self.d).transpose(1, 2)
        v = self.v_proj(x).view(S, L, self.h_kv, self.d).transpose(1, 2)
        return q, k, v

    def _out(self, o):
        S, _, L, _ = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(S, L, self.h * self.d))

    def forward(self, x):
        q, k, v = self._qkv(x)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale, enable_gqa=self.h != self.h_kv)
        return self._out(o)


class WindowAttention(FullAttention):
    """Query i attends to keys j with i - window < j <= i. Queries are cut into chunks of
    `window`; a chunk's keys are its own chunk and the one before, so the scores are
    [S, H, L / window, window, 2 * window] instead of [S, H, L, L]."""

    def __init__(self, hidden, num_heads, num_kv_heads, head_dim, window, scale=None):
        super().__init__(hidden, num_heads, num_kv_heads, head_dim, scale)
        if window < 1:
            raise ValueError(f"attention: window must be >= 1, got {window}")
        self.window = window

    def forward(self, x):
        q, k, v = self._qkv(x)
        S, H, L, d = q.shape
        w = self.window
        n = -(-L // w)                       # chunks
        tail = n * w - L                     # right padding to a whole number of chunks
        rep = H // self.h_kv
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        qc = F.pad(q, (0, 0, 0, tail)).view(S, H, n, w, d)
        # Keys: one chunk of zeros in front, so chunk c sees chunks c-1 and c.
        kp = F.pad(k, (0, 0, w, tail)).view(S, H, n + 1, w, d)
        vp = F.pad(v, (0, 0, w, tail)).view(S, H, n + 1, w, d)
        kc = torch.cat([kp[:, :, :-1], kp[:, :, 1:]], 3)         # [S, H, n, 2w, d]
        vc = torch.cat([vp[:, :, :-1], vp[:, :, 1:]], 3)
        # Query a of chunk c is position c*w + a, key b is (c-1)*w + b: in the window when
        # 1 <= b - a <= w. Chunk 0's first w keys are the zero chunk (positions < 0): out.
        a, b = torch.arange(w)[:, None], torch.arange(2 * w)[None, :]
        band = (b - a >= 1) & (b - a <= w)                         # [w, 2w]
        first = torch.ones(n, 1, 1, dtype=torch.bool)
        first[0] = False
        mask = band & (first | (b >= w))                           # [n, w, 2w]
        o = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=mask, scale=self.scale)
        return self._out(o.reshape(S, H, n * w, d)[:, :, :L])


class NSAAttention(nn.Module):
    """nsa.NativeSparseAttention on the [S, L] batch (B = S sequences of length L)."""

    def __init__(self, hidden, num_heads, num_kv_heads, head_dim, **nsa_options):
        super().__init__()
        self.layer = nsa.NativeSparseAttention(hidden, num_heads, num_kv_heads, head_dim, **nsa_options)

    def forward(self, x):
        return self.layer(x)


def make_attention(kind, hidden, num_heads, num_kv_heads, head_dim, nsa_options, scale=None):
    """nsa_options: the NSA layer's keyword arguments (block_len, stride, sel_block, top_n,
    n_init, n_local, window, phi); window attention uses the same `window`. scale: the
    softmax scale of every kind (None: 1 / sqrt(head_dim))."""
    if kind == "full":
        return FullAttention(hidden, num_heads, num_kv_heads, head_dim, scale)
    if kind == "window":
        return WindowAttention(hidden, num_heads, num_kv_heads, head_dim, nsa_options["window"], scale)
    if kind == "nsa":
        return NSAAttention(hidden, num_heads, num_kv_heads, head_dim, scale=scale, **nsa_options)
    raise ValueError(f"attention: unknown kind '{kind}' (expected one of {', '.join(KINDS)})")
