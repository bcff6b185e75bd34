// Device queries, device buffers, workspace and error reporting of the CUDA backend.
#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>

#include "cuda/common.cuh"

namespace nsa::cuda {

namespace detail {
void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line) {
  const char* base = file;
  for (const char* s = file; *s; ++s)
    if (*s == '/') base = s + 1;
  throw Error(std::string("CUDA error in ") + call + " (" + base + ":" + std::to_string(line) +
              "): " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}
}  // namespace detail

bf16 bf16::from_float(float x) { return bf16{__bfloat16_as_ushort(__float2bfloat16_rn(x))}; }
float bf16::to_float() const { return __bfloat162float(__ushort_as_bfloat16(bits)); }
f16 f16::from_float(float x) { return f16{__half_as_ushort(__float2half_rn(x))}; }
float f16::to_float() const { return __half2float(__ushort_as_half(bits)); }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device / no driver" error
    return 0;
  }
  return n;
}

std::string device_description() {
  int dev = 0;
  NSA_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  NSA_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s (sm_%d%d, %d SMs, %.1f GiB)", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount, prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

DeviceBuffer::DeviceBuffer(std::size_t bytes) { reserve(bytes); }
DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);
}
DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}
void DeviceBuffer::reserve(std::size_t bytes) {
  if (bytes <= bytes_ && data_ != nullptr) return;
  if (data_ != nullptr) NSA_CUDA_CHECK(cudaFree(data_));
  data_ = nullptr;
  bytes_ = 0;
  const cudaError_t e = cudaMalloc(&data_, std::max<std::size_t>(bytes, 16));
  if (e != cudaSuccess) {
    data_ = nullptr;
    cudaGetLastError();
    throw Error("cudaMalloc of " + std::to_string(bytes) + " bytes failed: " + cudaGetErrorString(e));
  }
  bytes_ = std::max<std::size_t>(bytes, 16);
}
void DeviceBuffer::copy_from_host(const void* src, std::size_t bytes) {
  if (bytes > bytes_) throw Error("DeviceBuffer::copy_from_host: " + std::to_string(bytes) + " bytes into a buffer of " + std::to_string(bytes_));
  NSA_CUDA_CHECK(cudaMemcpy(data_, src, bytes, cudaMemcpyHostToDevice));
}
void DeviceBuffer::copy_to_host(void* dst, std::size_t bytes) const {
  if (bytes > bytes_) throw Error("DeviceBuffer::copy_to_host: " + std::to_string(bytes) + " bytes from a buffer of " + std::to_string(bytes_));
  NSA_CUDA_CHECK(cudaMemcpy(dst, data_, bytes, cudaMemcpyDeviceToHost));
}

void* Workspace::get(int slot, std::size_t bytes) {
  if (slot < 0) throw Error("Workspace: negative slot");
  if (static_cast<std::size_t>(slot) >= slots_.size()) slots_.resize(slot + 1);
  slots_[slot].reserve(bytes);
  return slots_[slot].data();
}

void synchronize(void* stream) {
  NSA_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

}  // namespace nsa::cuda
