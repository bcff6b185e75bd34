// NSA forward and dense baseline, bf16 storage (mma.sync, fp32 accumulation). UNVERIFIED until run on a GPU.
#include "cuda/forward.cuh"
NSA_CUDA_INSTANTIATE(nsa::cuda::bf16)
