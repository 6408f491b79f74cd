// CPU reference of the batched sampling kernel (sampling.cuh): the same semantics, computed the
// plain way (a full sort of the row by (logit descending, id ascending), prefix walks), with the
// same bit-exact weights and RNG (sampling_common.h), so it returns the kernel's tokens exactly.
// Build-independent of CUDA.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/sampling/sampling_common.h"

namespace kvasir {

// The distribution a sampled (non-greedy) row draws from: [vocab] fixed-point weights, 0 for
// tokens the filters drop (or too light to carry weight); the draw picks token i with
// probability weight[i] / sum. Empty when the row is greedy (the argmax is then the token).
std::vector<uint64_t> SampleWeightsRef(std::span<const float> logits,
                                       const cuda::SampleRowParams& params);

struct SampleRowResult {
  int32_t token;
  float logprob;  // log-softmax under the sanitized raw logits (computed in double)
};

SampleRowResult SampleRowRef(std::span<const float> logits, const cuda::SampleRowParams& params);

// InvokeSample over host memory: every pointer in p is a host pointer.
void SampleRef(const cuda::SampleParams& p);

}  // namespace kvasir
