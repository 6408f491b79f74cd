// Request arrival process, as `vllm bench serve` draws it: inter-arrival gaps from a gamma
// distribution with shape = burstiness and scale = 1 / (rate * burstiness) (burstiness 1 is a
// Poisson process), accumulated, then rescaled so the last request arrives at n / rate.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace kvasir::bench {

// `n` raw inter-arrival gaps in seconds. rate = +inf gives zeros (all at once); burstiness =
// +inf gives constant gaps 1 / rate.
std::vector<double> SampleInterArrivalGaps(int n, double rate, double burstiness,
                                           std::mt19937_64& rng);

// Send times in seconds from the start of the run: cumulative gaps rescaled so that the last
// one equals n / rate (vLLM's normalization, which removes the 1-2% seed-to-seed drift of the
// total duration).
std::vector<double> ArrivalTimes(int n, double rate, double burstiness, std::mt19937_64& rng);

}  // namespace kvasir::bench
