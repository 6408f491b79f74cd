// `kvasir bench serve`: an online-serving load tester with the flags, metrics, printed report
// and result JSON of `vllm bench serve`, so numbers compare across systems. See README.md.
#pragma once

namespace kvasir {

// argv[0] is "serve" or the program name; the rest are vLLM-style flags. Prints the report on
// stdout, progress and diagnostics on stderr. Returns 0 on a completed run (even with failed
// requests, which are counted and reported), 2 on bad flags, 1 on setup errors.
int RunBenchServe(int argc, char** argv);

namespace bench {
using ::kvasir::RunBenchServe;
}  // namespace bench

}  // namespace kvasir
