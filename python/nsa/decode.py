"""DecodeCache: token-by-token NSA inference with a cache (spec, "Decoding with a cache").

A wrapper of nsa::DecodeCache (include/nsa/decode.h). One cache per attention layer keeps,
for up to ``max_seqs`` sequences of different lengths, the raw K/V of every branch (one
copy when K/V are shared), the compressed Kc/Vc so far and each sequence's position. Works
on torch tensors and numpy arrays alike (float32, read in place through DLPack; torch
bfloat16 too, widened to float32 as it comes in); outputs have the array type and dtype of q.

    cache = nsa.DecodeCache(H, H_kv, d_k, d_v, phi_k=..., phi_v=..., max_seqs=2, **config)
    o = cache.prefill(0, q, k, v, g_cmp, g_slc, g_win)      # q [T, H, d_k] -> o [T, H, d_v]
    o = cache.step([0, 1], q, k, v, g_cmp, g_slc, g_win)    # q [2, H, d_k] -> o [2, H, d_v]

Decoding token t gives row t of nsa.native_sparse_attention on the same tokens (fp32
tolerance). The phi weights are copied when the cache is made: a cache made before a
training step keeps the old weights.

``storage="bf16"`` stores K/V and Kc/Vc as bf16: half the memory (``memory()["chunk_bytes"]``)
and half the bytes a step reads. q, gates and phi's weights are rounded to bf16 as they come
in; the arrays passed in and returned stay float32; products accumulate in fp32. Outputs are
within the spec's bf16 tolerance (1e-2 relative) of an fp32 cache's. A saved file loads only
into a cache of the same storage.
"""
import numpy as np

from . import _core
from ._common import check_phi_dict, make_config, phi_hidden_of

__all__ = ["DecodeCache"]

STORAGE = ("fp32", "bf16")  # what a cache stores K/V and Kc/Vc as (nsa::CacheStorage)


def _is_torch(x):
    return type(x).__module__.startswith("torch")


def _plain(x):
    """What the binding reads: torch tensors detached (same memory), numpy arrays as they are."""
    if x is None:
        return None
    return x.detach() if _is_torch(x) else x


def _stack_gates(g_cmp, g_slc, g_win):
    if _is_torch(g_cmp):
        import torch

        return torch.stack((_plain(g_cmp), _plain(g_slc), _plain(g_win)), dim=-1)
    return np.stack((g_cmp, g_slc, g_win), axis=-1)


def _empty_like(q, shape):
    if _is_torch(q):
        import torch

        return torch.empty(shape, dtype=q.dtype, device=q.device)
    return np.empty(shape, dtype=q.dtype)


def _weights(params):
    """phi parameters as contiguous float32 (the cache copies them, so converting is free)."""
    if params is None:
        return None
    out = {}
    for n, p in params.items():
        if _is_torch(p):
            out[n] = p.detach().float().contiguous()
        else:
            out[n] = np.ascontiguousarray(p, dtype=np.float32)
    return out


def _is_bf16(x):
    return _is_torch(x) and str(x.dtype) == "torch.bfloat16"


def _f32(x):
    """torch bfloat16 tensors widened to float32 (a copy, exact: the cache reads fp32 and keeps
    its own storage); everything else as it is."""
    return x.float() if _is_bf16(x) else x


def _lift(x):
    return None if x is None else x[None]


def _finish(target, out, bf16):
    """The step's result: the fp32 target itself, or (bfloat16 calls) rounded to bfloat16,
    into ``out`` when the caller gave one."""
    if not bf16:
        return target
    if out is None:
        import torch

        return target.to(torch.bfloat16)
    out.copy_(target)
    return out


class DecodeCache:
    """One attention layer's decode state; see the module docstring.

    Args:
        num_heads, num_kv_heads, head_dim, head_dim_v: H, H_kv, d_k, d_v.
        phi_k, phi_v: the compression functions' parameters (dicts as for
            nsa.native_sparse_attention; None for phi="mean"); copied.
        shared_kv: one K/V for the three branches (then step/prefill take k, v only).
        max_seqs: sequence ids 0 .. max_seqs - 1. max_tokens: per-sequence limit (0: none).
        chunk_tokens: storage growth granularity (0: default; a multiple of sel_block).
        storage: "fp32" (default) or "bf16": the element type K/V and Kc/Vc are stored in
            (see the module docstring); inputs and outputs are float32 either way.
        max_pages: memory budget in chunks for all sequences together (0: none); a call
            that would need more raises nsa.Error naming it and changes nothing.
        block_len ... phi, scale: the operator's parameters, as for the op.

    Attributes: config (nsa.Config), shared_kv, storage ("fp32" or "bf16").
    """

    def __init__(self, num_heads, num_kv_heads, head_dim, head_dim_v=None, *, phi_k=None, phi_v=None,
                 shared_kv=True, max_seqs=1, max_tokens=0, chunk_tokens=0, storage="fp32", max_pages=0, block_len=32,
                 stride=16, sel_block=64, top_n=16, n_init=1, n_local=2, window=512, scale=None, phi="mlp"):
        if not isinstance(storage, str) or storage not in STORAGE:
            raise _core.Error(f"nsa: DecodeCache storage must be 'fp32' or 'bf16', got {storage!r}")
        d_v = head_dim if head_dim_v is None else head_dim_v
        phi_k, phi_v = _weights(check_phi_dict(phi_k, phi, "phi_k")), _weights(check_phi_dict(phi_v, phi, "phi_v"))
        hidden = phi_hidden_of(phi, phi_k, phi_v, head_dim, d_v)
        self.config = make_config(block_len, stride, sel_block, top_n, n_init, n_local, window, scale, phi, hidden)
        self.shared_kv, self.storage = shared_kv, storage
        self._cache = _core.DecodeCache(self.config, num_heads, num_kv_heads, head_dim, d_v, shared_kv,
                                        max_seqs, max_tokens, chunk_tokens, phi_k, phi_v, storage, max_pages)
        self.num_heads, self.head_dim_v = num_heads, d_v

    def _branch_kv(self, k_slc, v_slc, k_win, v_win):
        return tuple(_plain(x) for x in (k_slc, v_slc, k_win, v_win))

    def prefill(self, seq, q, k, v, g_cmp, g_slc, g_win, *, k_slc=None, v_slc=None, k_win=None,
                v_win=None, out=None):
        """Appends a prompt of T tokens to sequence `seq`: q [T, H, d_k], k [T, H_kv, d_k],
        v [T, H_kv, d_v], gates [T, H]; returns o [T, H, d_v] (``out`` when given)."""
        bf16 = _is_bf16(q) or _is_bf16(out)
        q, k, v, g_cmp, g_slc, g_win = (_f32(x) for x in (q, k, v, g_cmp, g_slc, g_win))
        k_slc, v_slc, k_win, v_win = (_f32(x) for x in (k_slc, v_slc, k_win, v_win))
        gates = _stack_gates(g_cmp, g_slc, g_win)
        target = _empty_like(q, (q.shape[0], self.num_heads, self.head_dim_v)) if out is None or bf16 else out
        branch = tuple(_lift(x) for x in self._branch_kv(k_slc, v_slc, k_win, v_win))
        self._cache.prefill(seq, _lift(_plain(q)), _lift(_plain(k)), _lift(_plain(v)), *branch,
                            _lift(gates), _lift(_plain(target)))
        return _finish(target, out, bf16)

    def append(self, seq, k, v, *, k_slc=None, v_slc=None, k_win=None, v_win=None):
        """Stores the K/V of T tokens ([T, H_kv, dim]) at the end of `seq` without outputs."""
        k, v, k_slc, v_slc, k_win, v_win = (_f32(x) for x in (k, v, k_slc, v_slc, k_win, v_win))
        branch = tuple(_lift(x) for x in self._branch_kv(k_slc, v_slc, k_win, v_win))
        self._cache.append(seq, _lift(_plain(k)), _lift(_plain(v)), *branch)

    def step(self, seqs, q, k, v, g_cmp, g_slc, g_win, *, k_slc=None, v_slc=None, k_win=None,
             v_win=None, out=None):
        """One new token for each of the B distinct sequences `seqs`: q [B, H, d_k],
        k [B, H_kv, d_k], v [B, H_kv, d_v], gates [B, H]; returns o [B, H, d_v].

        Several tokens per sequence (speculative decoding's drafts): q [B, k, H, d_k],
        k [B, k, H_kv, d_k], v [B, k, H_kv, d_v], gates [B, k, H]; returns o [B, k, H, d_v],
        exactly what k one-token steps give (each token its own selection); ``truncate``
        drops the rejected ones."""
        seqs = [int(s) for s in seqs]
        multi = q.ndim == 4
        bf16 = _is_bf16(q) or _is_bf16(out)
        q, k, v, g_cmp, g_slc, g_win = (_f32(x) for x in (q, k, v, g_cmp, g_slc, g_win))
        k_slc, v_slc, k_win, v_win = (_f32(x) for x in (k_slc, v_slc, k_win, v_win))
        gates = _stack_gates(g_cmp, g_slc, g_win)
        shape = (q.shape[0],) + ((q.shape[1],) if multi else ()) + (self.num_heads, self.head_dim_v)
        target = _empty_like(q, shape) if out is None or bf16 else out
        # [B, heads, dim] -> [B, 1, heads, dim]; [B, k, heads, dim] as it is
        at = lambda x: None if x is None else (x if multi else x[:, None])
        branch = tuple(at(x) for x in self._branch_kv(k_slc, v_slc, k_win, v_win))
        self._cache.step(seqs, at(_plain(q)), at(_plain(k)), at(_plain(v)), *branch, at(gates), at(_plain(target)))
        return _finish(target, out, bf16)

    def reset(self, seq):
        """Empties sequence `seq` and releases its storage."""
        self._cache.reset(seq)

    def fork(self, src, dst):
        """Makes the empty sequence `dst` a copy of `src` that shares its chunks (a common
        prefix stored once); a shared chunk is copied when either sequence first writes it."""
        self._cache.fork(src, dst)

    def truncate(self, seq, tokens):
        """Keeps the first `tokens` tokens of `seq` and drops the rest (rejected speculative
        tokens, an edited turn); decoding continues from position `tokens`."""
        self._cache.truncate(seq, tokens)

    def position(self, seq):
        """Tokens stored in `seq` = the position of its next token."""
        return self._cache.position(seq)

    def num_cmp_blocks(self, seq):
        return self._cache.num_cmp_blocks(seq)

    def tokens_read(self, seq, kv_head=0):
        """Tokens read by the last token of `seq` for one kv group: {cmp, slc, win, total}."""
        return self._cache.tokens_read(seq, kv_head)

    def selected_blocks(self, seq, kv_head=0):
        """The selection blocks chosen for the last token of `seq` (ascending)."""
        return self._cache.selected_blocks(seq, kv_head)

    def total_tokens_read(self):
        return self._cache.total_tokens_read()

    def memory(self):
        """{bytes, chunk_bytes, chunk_tokens, chunks, shared_chunks, max_chunks, tokens, bytes_per_token}."""
        return self._cache.memory()

    def save(self, path):
        """Writes the cache to `path` (atomically: a temporary file renamed into place)."""
        self._cache.save(str(path))

    def load(self, path):
        """Replaces the contents with a file saved by a cache of the same shape, storage, config
        and phi (nsa.Error naming the mismatch otherwise; the contents are then kept)."""
        self._cache.load(str(path))

    def save_sequence(self, seq, path):
        """Writes sequence `seq` alone to `path` (atomically; `load` reads it as sequence 0): a
        conversation put away when it goes idle."""
        self._cache.save_sequence(seq, str(path))

    def load_sequence(self, seq, path):
        """Replaces sequence `seq` with the one sequence of a file from `save_sequence`, under
        `load`'s checks; the other sequences are untouched, and `seq` is kept on an error."""
        self._cache.load_sequence(seq, str(path))
