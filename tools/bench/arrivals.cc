#include "tools/bench/arrivals.h"

#include <cmath>
#include <limits>

namespace kvasir::bench {

std::vector<double> SampleInterArrivalGaps(int n, double rate, double burstiness,
                                           std::mt19937_64& rng) {
  std::vector<double> gaps(n, 0.0);
  if (std::isinf(rate)) return gaps;
  if (std::isinf(burstiness)) {
    for (double& g : gaps) g = 1.0 / rate;
    return gaps;
  }
  std::gamma_distribution<double> gamma(burstiness, 1.0 / (rate * burstiness));
  for (double& g : gaps) g = gamma(rng);
  return gaps;
}

std::vector<double> ArrivalTimes(int n, double rate, double burstiness, std::mt19937_64& rng) {
  std::vector<double> t = SampleInterArrivalGaps(n, rate, burstiness, rng);
  for (int i = 1; i < n; ++i) t[i] += t[i - 1];
  if (n > 0 && t.back() > 0 && !std::isinf(rate)) {
    const double scale = (n / rate) / t.back();
    for (double& x : t) x *= scale;
  }
  return t;
}

}  // namespace kvasir::bench
