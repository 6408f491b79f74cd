#include "runtime/cuda/device_buffer.h"

#include <cuda_runtime.h>

#include "runtime/cuda/cuda_status.h"

namespace kvasir::cuda_internal {

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) (void)cudaFree(ptr_);
}

absl::Status DeviceBuffer::Grow(size_t bytes) {
  if (bytes <= bytes_) return absl::OkStatus();
  if (ptr_ != nullptr) {
    CUDA_RETURN_IF_ERROR(cudaFree(ptr_));
    ptr_ = nullptr;
    bytes_ = 0;
  }
  CUDA_RETURN_IF_ERROR(cudaMalloc(&ptr_, bytes));
  bytes_ = bytes;
  return absl::OkStatus();
}

PinnedBuffer::~PinnedBuffer() {
  if (ptr_ != nullptr) (void)cudaFreeHost(ptr_);
}

absl::Status PinnedBuffer::Grow(size_t bytes) {
  if (bytes <= bytes_) return absl::OkStatus();
  if (ptr_ != nullptr) {
    CUDA_RETURN_IF_ERROR(cudaFreeHost(ptr_));
    ptr_ = nullptr;
    bytes_ = 0;
  }
  CUDA_RETURN_IF_ERROR(cudaMallocHost(&ptr_, bytes));
  bytes_ = bytes;
  return absl::OkStatus();
}

}  // namespace kvasir::cuda_internal
