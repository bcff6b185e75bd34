// CUDA decoding with a cache, fp16 storage, fp32 accumulation. UNVERIFIED until run on a GPU.
#include "cuda/decode.cuh"
NSA_CUDA_DECODE_INSTANTIATE(nsa::cuda::f16)
