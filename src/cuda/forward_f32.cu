// NSA forward and dense baseline, fp32 storage (plain FMA, for checking). UNVERIFIED until run on a GPU.
#include "cuda/forward.cuh"
NSA_CUDA_INSTANTIATE(float)
