// NSA and dense backward, fp32 storage (scalar FMA, for checking). UNVERIFIED until run on a GPU.
#include "cuda/backward.cuh"
NSA_CUDA_INSTANTIATE_BACKWARD(float)
