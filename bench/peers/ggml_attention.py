"""ggml's ``ggml_flash_attn_ext`` on the CPU (through the PyPI package ggml-python, which
ships ggml's C API), timed as an inference engine calls it.

ggml's layout: q [d_k, n_q, H], k [d_k, T, H_kv], v [d_v, T, H_kv] (each kv head's keys
contiguous), GQA by broadcasting H over H_kv. K/V stored as f32 or f16 (ggml's CPU flash
kernel has no bf16 K/V path we could pin; f16 has the same size). decode: one query token,
no mask (every key visible). forward: causal prefill in chunks of 512 query tokens, as
llama.cpp's micro-batches, each with its [n_kv, 512] f16 mask; the time is the sum.
Threads: ggml's own, ``n_threads``.
"""
import ctypes

import numpy as np

from timing import median_ms

try:
    import ggml
except ImportError:  # reported by the caller
    ggml = None

CHUNK = 512


def available():
    return ggml is not None


def version():
    from importlib.metadata import version as v

    return "ggml-python " + v("ggml-python")


def _types():
    return {"f32": (ggml.GGML_TYPE_F32, np.float32), "f16": (ggml.GGML_TYPE_F16, np.float16)}


def _fill(tensor, values):
    """Copies the numpy array `values` (float32 or float16) into a ggml tensor's data."""
    ptr = ggml.ggml_get_data(tensor)
    ctypes.memmove(ptr, values.ctypes.data, values.nbytes)


class _Context:
    def __init__(self, nbytes):
        self.ctx = ggml.ggml_init(ggml.ggml_init_params(mem_size=int(nbytes), mem_buffer=None, no_alloc=False))
        if not self.ctx:
            raise MemoryError(f"ggml_init could not allocate {nbytes} bytes")

    def __enter__(self):
        return self.ctx

    def __exit__(self, *exc):
        ggml.ggml_free(self.ctx)




def _kv(ctx, H_kv, d_k, d_v, T, kv_type, rng):
    gtype, np_type = _types()[kv_type]
    k = ggml.ggml_new_tensor_3d(ctx, gtype, d_k, T, H_kv)
    v = ggml.ggml_new_tensor_3d(ctx, gtype, d_v, T, H_kv)
    _fill(k, rng.standard_normal(T * H_kv * d_k, dtype=np.float32).astype(np_type))
    _fill(v, rng.standard_normal(T * H_kv * d_v, dtype=np.float32).astype(np_type))
    return k, v


def _decode_graph(ctx, H, H_kv, d_k, d_v, T, kv_type, seed):
    """The decode step's graph; returns (graph, out tensor, q, k, v as the numpy values stored)."""
    rng = np.random.default_rng(seed)
    _, np_type = _types()[kv_type]
    qv = rng.standard_normal((H, d_k), dtype=np.float32)
    kv = rng.standard_normal((H_kv, T, d_k), dtype=np.float32).astype(np_type)
    vv = rng.standard_normal((H_kv, T, d_v), dtype=np.float32).astype(np_type)
    gtype = _types()[kv_type][0]
    q = ggml.ggml_new_tensor_3d(ctx, ggml.GGML_TYPE_F32, d_k, 1, H)
    k = ggml.ggml_new_tensor_3d(ctx, gtype, d_k, T, H_kv)
    v = ggml.ggml_new_tensor_3d(ctx, gtype, d_v, T, H_kv)
    _fill(q, qv)
    _fill(k, kv)
    _fill(v, vv)
    out = ggml.ggml_flash_attn_ext(ctx, q, k, v, None, 1.0 / np.sqrt(d_k), 0.0, 0.0)
    graph = ggml.ggml_new_graph(ctx)
    ggml.ggml_build_forward_expand(graph, out)
    return graph, out, qv, kv, vv


def _decode_bytes(H, H_kv, d_k, d_v, T):
    return T * H_kv * (d_k + d_v) * 4 + H * (d_k + d_v) * 8 + (64 << 20)


def decode_ms(H, H_kv, d_k, d_v, T, kv_type, threads, reps=16, seed=0):
    """One query token against T cached tokens, K/V as kv_type ("f32" or "f16")."""
    with _Context(_decode_bytes(H, H_kv, d_k, d_v, T)) as ctx:
        graph, _, _, _, _ = _decode_graph(ctx, H, H_kv, d_k, d_v, T, kv_type, seed)
        return median_ms(lambda: ggml.ggml_graph_compute_with_ctx(ctx, graph, threads), reps)


def decode_output(H, H_kv, d_k, d_v, T, kv_type, threads=1, seed=0):
    """The decode step's result [H, d_v] and its inputs q [H, d_k], k [H_kv, T, d_k],
    v [H_kv, T, d_v] (numpy), for checking that the timed computation is attention."""
    with _Context(_decode_bytes(H, H_kv, d_k, d_v, T)) as ctx:
        graph, out, q, k, v = _decode_graph(ctx, H, H_kv, d_k, d_v, T, kv_type, seed)
        ggml.ggml_graph_compute_with_ctx(ctx, graph, threads)
        res = np.ctypeslib.as_array(ctypes.cast(ggml.ggml_get_data(out), ctypes.POINTER(ctypes.c_float)),
                                    shape=(1, H, d_v))  # [n_batch, n_head, d_v]: permuted
        return res[0].copy(), q, k, v


def _forward_graphs(ctx, H, H_kv, d_k, d_v, T, kv_type, seed):
    """One graph per chunk of CHUNK queries; returns (graphs, outs, q [H, T, d_k], k, v)."""
    rng = np.random.default_rng(seed)
    gtype, np_type = _types()[kv_type]
    elem = 2 if kv_type == "f16" else 4
    qv = rng.standard_normal((H, T, d_k), dtype=np.float32)
    kv = rng.standard_normal((H_kv, T, d_k), dtype=np.float32).astype(np_type)
    vv = rng.standard_normal((H_kv, T, d_v), dtype=np.float32).astype(np_type)
    k = ggml.ggml_new_tensor_3d(ctx, gtype, d_k, T, H_kv)
    v = ggml.ggml_new_tensor_3d(ctx, gtype, d_v, T, H_kv)
    _fill(k, kv)
    _fill(v, vv)
    graphs, outs = [], []
    for c0 in range(0, T, CHUNK):
        c1 = min(T, c0 + CHUNK)
        n_q, n_kv = c1 - c0, c1
        q = ggml.ggml_new_tensor_3d(ctx, ggml.GGML_TYPE_F32, d_k, n_q, H)
        _fill(q, np.ascontiguousarray(qv[:, c0:c1]))
        # The first n_kv tokens of every kv head: rows d * elem bytes apart, heads T rows apart.
        kv_view = lambda x, d: ggml.ggml_view_3d(ctx, x, d, n_kv, H_kv, d * elem, T * d * elem, 0)
        rows = -(-n_q // ggml.GGML_KQ_MASK_PAD) * ggml.GGML_KQ_MASK_PAD  # ggml pads the mask's rows
        mask = ggml.ggml_new_tensor_2d(ctx, ggml.GGML_TYPE_F16, n_kv, rows)
        m = np.zeros((rows, n_kv), dtype=np.float16)
        for i in range(n_q):  # query c0 + i sees keys 0 .. c0 + i
            m[i, c0 + i + 1:] = -np.inf
        m[n_q:, :] = -np.inf
        _fill(mask, m)
        out = ggml.ggml_flash_attn_ext(ctx, q, kv_view(k, d_k), kv_view(v, d_v), mask, 1.0 / np.sqrt(d_k), 0.0, 0.0)
        graph = ggml.ggml_new_graph(ctx)
        ggml.ggml_build_forward_expand(graph, out)
        graphs.append(graph)
        outs.append((out, n_q))
    return graphs, outs, qv, kv, vv


def _forward_bytes(H, H_kv, d_k, d_v, T):
    mask_bytes = sum(min(T, c0 + CHUNK) * (CHUNK + 32) * 2 for c0 in range(0, T, CHUNK))
    return T * H_kv * (d_k + d_v) * 4 + T * H * (d_k + d_v) * 8 + mask_bytes + (256 << 20)


def forward_ms(H, H_kv, d_k, d_v, T, kv_type, threads, reps=1, seed=0):
    """Causal attention over T tokens, in chunks of CHUNK queries (the sum of the chunks)."""
    with _Context(_forward_bytes(H, H_kv, d_k, d_v, T)) as ctx:
        graphs, _, _, _, _ = _forward_graphs(ctx, H, H_kv, d_k, d_v, T, kv_type, seed)

        def run():
            for graph in graphs:
                ggml.ggml_graph_compute_with_ctx(ctx, graph, threads)

        return median_ms(run, reps)


def forward_output(H, H_kv, d_k, d_v, T, kv_type, threads=1, seed=0):
    """The causal forward's result [H, T, d_v] and its inputs (numpy), for checking."""
    with _Context(_forward_bytes(H, H_kv, d_k, d_v, T)) as ctx:
        graphs, outs, q, k, v = _forward_graphs(ctx, H, H_kv, d_k, d_v, T, kv_type, seed)
        res = []
        for graph, (out, n_q) in zip(graphs, outs):
            ggml.ggml_graph_compute_with_ctx(ctx, graph, threads)
            o = np.ctypeslib.as_array(ctypes.cast(ggml.ggml_get_data(out), ctypes.POINTER(ctypes.c_float)),
                                      shape=(n_q, H, d_v))  # [n_batch, n_head, d_v]: permuted
            res.append(o.transpose(1, 0, 2).copy())
        return np.concatenate(res, axis=1), q, k, v
