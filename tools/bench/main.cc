// kvasir-bench: standalone `vllm bench serve`-compatible load tester.
#include "tools/bench/bench_serve.h"

int main(int argc, char** argv) { return kvasir::RunBenchServe(argc, argv); }
