// NSA and dense backward, bf16 storage (mma.sync, fp32 accumulation). UNVERIFIED until run on a GPU.
#include "cuda/backward.cuh"
NSA_CUDA_INSTANTIATE_BACKWARD(nsa::cuda::bf16)
