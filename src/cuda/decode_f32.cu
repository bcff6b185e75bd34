// CUDA decoding with a cache, fp32 storage (plain FMA, for checking). UNVERIFIED until run on a GPU.
#include "cuda/decode.cuh"
NSA_CUDA_DECODE_INSTANTIATE(float)
