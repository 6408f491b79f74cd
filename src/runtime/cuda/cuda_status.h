// CUDA runtime and cuBLASLt error codes as absl::Status (InternalError naming the failed call),
// for the CUDA runner's host code.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "common/status.h"

namespace kvasir::cuda_internal {

inline absl::Status CudaStatus(cudaError_t e, const char* what) {
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

inline absl::Status CublasStatus(cublasStatus_t s, const char* what) {
  return absl::InternalError(
      absl::StrCat(what, ": ", cublasLtGetStatusName(s), " (", cublasLtGetStatusString(s), ")"));
}

}  // namespace kvasir::cuda_internal

// Returns InternalError from the enclosing function when a CUDA call fails (the thread's last
// error is cleared, so later calls do not report it again).
#define CUDA_RETURN_IF_ERROR(expr)                                         \
  do {                                                                     \
    const cudaError_t kvasir_cuda_err_ = (expr);                           \
    if (kvasir_cuda_err_ != cudaSuccess) {                                 \
      (void)cudaGetLastError();                                            \
      return ::kvasir::cuda_internal::CudaStatus(kvasir_cuda_err_, #expr); \
    }                                                                      \
  } while (0)

#define CUBLAS_RETURN_IF_ERROR(expr)                                          \
  do {                                                                        \
    const cublasStatus_t kvasir_cublas_st_ = (expr);                          \
    if (kvasir_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                         \
      return ::kvasir::cuda_internal::CublasStatus(kvasir_cublas_st_, #expr); \
    }                                                                         \
  } while (0)
