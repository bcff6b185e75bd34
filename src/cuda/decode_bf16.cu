// CUDA decoding with a cache, bf16 storage, fp32 accumulation. UNVERIFIED until run on a GPU.
#include "cuda/decode.cuh"
NSA_CUDA_DECODE_INSTANTIATE(nsa::cuda::bf16)
