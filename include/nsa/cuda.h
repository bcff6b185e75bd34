// CUDA kernels of NSA (forward) and of the dense causal baseline: the public interface.
//
// Plain C++: includable without CUDA headers. Device memory is passed as pointers inside
// the same views as the CPU API (TensorView / NsaInputs), with storage type
//   float           fp32 storage (for checking; plain FMA, fp32 accumulation)
//   nsa::cuda::bf16 bfloat16 storage (tensor cores, mma.sync, fp32 accumulation)
//   nsa::cuda::f16  float16 storage  (tensor cores, mma.sync, fp32 accumulation)
// The streams are cudaStream_t passed as void* (nullptr = the legacy default stream).
//
// Host vs device: every tensor view, PhiWeights pointer and `out` points to DEVICE
// memory; Sequences::cu_seqlens is a HOST array (the launcher plans the grid from it).
// Head dims d_k, d_v: multiples of 16 in [16, 256]; views 16-byte aligned with strides
// that keep every row 16-byte aligned (contiguous views always are).
//
// Status: written on a machine without a GPU. Until nsa_gpu_check has passed on a GPU,
// treat every kernel behind this header as unverified.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nsa/attention.h"
#include "nsa/config.h"
#include "nsa/tensor.h"

namespace nsa::cuda {

// 16-bit storage types: host-side tags with the bit layout of __nv_bfloat16 / __half,
// with round-to-nearest-even conversion from float and exact conversion to float.
struct bf16 {
  std::uint16_t bits;
  static bf16 from_float(float x);
  float to_float() const;
  explicit operator double() const { return to_float(); }
};
struct f16 {
  std::uint16_t bits;
  static f16 from_float(float x);
  float to_float() const;
  explicit operator double() const { return to_float(); }
};

// Number of CUDA devices (0 when there is no driver or no device); never throws.
int device_count();
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)" for the current device.
std::string device_description();

// An owned device allocation (cudaMalloc / cudaFree). Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  template <class T>
  T* as() const { return static_cast<T*>(data_); }
  // Grows (never shrinks) to at least `bytes`; contents are lost when it grows.
  void reserve(std::size_t bytes);
  // Synchronous copies (cudaMemcpy) of `bytes` bytes from offset 0.
  void copy_from_host(const void* src, std::size_t bytes);
  void copy_to_host(void* dst, std::size_t bytes) const;

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

// Scratch memory reused across calls (intermediate branch outputs, scores, grid plans).
// Grows on demand; keep one per stream.
class Workspace {
 public:
  void* get(int slot, std::size_t bytes);
 private:
  std::vector<DeviceBuffer> slots_;
};

// What the forward pass leaves for the backward pass, in device memory (mirrors
// nsa::NsaSaved). Resized by nsa_forward. Element type of Kc/Vc is the storage type.
struct NsaSavedDevice {
  index_t rows = 0, heads = 0, kv_heads = 0, top_n = 0, d_k = 0, d_v = 0, total_cmp = 0;
  DeviceBuffer lse;           // float [3, rows, H]: per-branch log-sum-exp, -inf where a branch sees nothing
  DeviceBuffer branch_out;    // float [3, rows, H, d_v]: each branch's output before gating
  DeviceBuffer sel_blocks;    // int32 [rows, H_kv, top_n]: chosen blocks, ascending, -1 padded
  DeviceBuffer k_cmp_blocks;  // storage type [total_cmp, H_kv, d_k]
  DeviceBuffer v_cmp_blocks;  // storage type [total_cmp, H_kv, d_v]
  std::vector<index_t> cmp_offsets;  // host, [num_seqs + 1]
};

// NSA forward: out [B,T,H,d_v] (device). `saved` may be null (then only `out` is kept).
// Throws nsa::Error on invalid input (before launching anything) and on CUDA errors.
// Launches are asynchronous on `stream`.
template <class T>
void nsa_forward(const Config& config, const NsaInputs<T>& in, TensorView<T> out,
                 NsaSavedDevice* saved, Workspace& workspace, void* stream = nullptr);

// Dense causal flash attention, the baseline. lse: device float [rows, H] or null.
template <class T>
void dense_forward(const DenseInputs<T>& in, TensorView<T> out, float* lse,
                   Workspace& workspace, void* stream = nullptr);

// Synchronises `stream`, throwing nsa::Error (with cudaGetErrorString) on a kernel fault.
void synchronize(void* stream = nullptr);

}  // namespace nsa::cuda
