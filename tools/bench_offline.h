// `kvasir bench-offline`: offline throughput of the engine (vLLM's `bench throughput`): every
// request is queued at once, the engine's scheduler batches them, and the table reports output
// tokens per second over the whole run.
#pragma once

namespace kvasir {

int BenchOfflineMain(int argc, char** argv);

}  // namespace kvasir
