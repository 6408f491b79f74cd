// `kvasir bench-kv`: KV eviction quality against memory (kv_policy at several budgets) on a
// retrieval eval set such as ../shared/models/tinyrecall/eval.jsonl; prints a table.
#pragma once

namespace kvasir {

int BenchKvMain(int argc, char** argv);

}  // namespace kvasir
