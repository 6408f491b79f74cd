// Partial paged attention on the CPU, vectorized: the same contract and math as
// PagedPartialAttentionRef (paged_attention_ref.h), with AVX-512 and AVX2+FMA variants chosen at
// run time (the scalar reference where neither is present). One K and one V row are read per
// token for the whole GQA group of query heads; exp is a vectorized polynomial (relative error
// < 2e-7). The KV pools may be fp32 or bf16 (PagedAttentionParams::kv_bf16); scores, softmax
// and accumulation are fp32 either way.
#pragma once

#include "kernels/attention/paged_attention_ref.h"

namespace kvasir {

enum class CpuIsa { kScalar, kAvx2, kAvx512 };

// The best variant this CPU runs (KVASIR_CPU_ISA=scalar|avx2|avx512 lowers it, for tests and
// benchmarks).
CpuIsa DetectCpuIsa();
const char* CpuIsaName(CpuIsa isa);

// With the detected variant.
void PagedPartialAttentionCpu(const PagedAttentionParams& p);
// With a given one (must not exceed DetectCpuIsa()'s).
void PagedPartialAttentionCpu(const PagedAttentionParams& p, CpuIsa isa);

}  // namespace kvasir
