"""nsa: Native Sparse Attention (Yuan et al., 2025) on the CPU, for PyTorch and NumPy.

    nsa.native_sparse_attention(q, k, v, g_cmp, g_slc, g_win, ...)   the op (autograd)
    nsa.NativeSparseAttention(hidden_size, num_heads, ...)            an nn.Module layer
    nsa.numpy.native_sparse_attention(...)                            forward on numpy arrays
    nsa.DecodeCache(num_heads, num_kv_heads, head_dim, ...)           decoding with a cache
    nsa.Config, nsa.Error, nsa.set_num_threads

Semantics: ../shared/docs/nsa-spec.md (the project spec). float32 runs the fast CPU kernels, torch bfloat16
the same kernels on bf16 storage (fp32 compute; output and gradients rounded to bfloat16), float64 the float64
reference. Tensors cross into C++ through DLPack without copies.
The torch parts need PyTorch; nsa.numpy works without it.
"""
from . import _core, numpy
from ._core import Config, Error, __version__, get_num_threads, set_num_threads
from .decode import DecodeCache

__all__ = ["Config", "DecodeCache", "Error", "__version__", "get_num_threads", "set_num_threads", "numpy"]

try:
    import torch as _torch  # noqa: F401
except ImportError:  # numpy-only install
    pass
else:
    from .functional import NativeSparseAttentionFunction, native_sparse_attention
    from .layer import NativeSparseAttention

    __all__ += ["native_sparse_attention", "NativeSparseAttentionFunction", "NativeSparseAttention"]
