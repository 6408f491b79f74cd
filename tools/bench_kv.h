// `kvasir bench-kv`: KV eviction quality against memory (kv_policy at several budgets) on a
// retrieval eval set such as ../shared/models/tinyrecall/eval.jsonl; prints a table.
#pragma once

namespace kvasir {

int BenchKvMain(int argc, char** argv);
// `kvasir bench-hybrid` (bench_hybrid.cc, CUDA builds): decode TPOT with the KV on the GPU, on
// the host and split by the hybrid executor, by context and batch.
int BenchHybrid(int argc, char** argv);

}  // namespace kvasir
