// Batched token sampling on the GPU-resident logits (CUDA): one token id (and optionally its raw
// logprob) per row, so only [rows] ints travel to the host. The CPU reference is SampleRef
// (sampling_ref.h), which returns the same tokens bit for bit.
//
// Semantics, per row, in the CPU Sampler's order (src/model/sampling/sampler.h; penalties are
// not applied here):
//   * logits are sanitized: NaN -> -inf, +inf -> FLT_MAX, -0 -> +0.
//   * greedy (temperature < 1e-5 or NaN, or every logit -inf): the argmax, lowest id on ties.
//   * otherwise tokens are ordered by (logit descending, id ascending), a strict total order, and
//     each filter keeps a prefix of that order, so ties at a threshold always go to the lowest ids:
//       top-k: the first k tokens;
//       top-p: the shortest prefix of the top-k tokens whose mass reaches
//              (top_p - 1e-6) * (top-k mass), at least one token (Sampler's tolerance);
//       min-p: the tokens with p >= min_p * p_max (tokens of one logit share the verdict; the
//              threshold is on the log weight, sampling_common.h's MinPLogThreshold).
//     Mass is fixed point: weight = floor(2^(40 + y)), y = (v - max) * log2(e) / T, at least 1
//     for y >= -40 and 0 below (tokens under ~1e-12 p_max are never drawn). Sums are exact
//     integers, so no summation order can change a decision.
//   * the draw: u = Philox4x32-10(key = seed, counter = (step, 0)) as 64 bits, target =
//     floor(u * kept_mass / 2^64); the token is the first, in id order, whose running kept mass
//     exceeds target (inverse CDF). The same logits and params give the same token on any device
//     and in the reference; consecutive steps give independent draws.
//   * out_logprobs: log-softmax of the token under the sanitized raw logits (fp32 arithmetic,
//     within ~1e-5 of the exact value); -inf when every logit is -inf.
//
// One CTA of 512 threads per row. Passes over the row: one for max / argmax / normalizer (all a
// greedy row needs); top-k and top-p each search their threshold with histograms of 2048 bins
// (sampling_search.h: first by log weight, then by 11-bit digits of the order key within the
// chosen bin, each later pass counting only the tokens of that bin; 2-3 passes typically, at most
// 4, fewer when a bin is taken whole); one for the draw (per-warp kept mass of contiguous chunks,
// then one warp rescans its chunk). Temperature alone: 2 passes; top-k + top-p: typically 4-6.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/sampling/sampling_common.h"

namespace kvasir::cuda {

// rows < 0, vocab < 1 or > kMaxSampleVocab, logits_stride < 0 or in (0, vocab), or (rows > 0
// and) a null logits / params / out_tokens: cudaErrorInvalidValue. rows == 0: nothing to do.
cudaError_t InvokeSample(const SampleParams& p, cudaStream_t stream);

}  // namespace kvasir::cuda
