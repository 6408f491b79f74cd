#include "model/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "common/logging.h"
#include "model/sampling/internal/fast_exp.h"

namespace kvasir {
namespace {

using internal::ExpNonPositive;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kFloatMax = std::numeric_limits<float>::max();
constexpr double kDoubleInf = std::numeric_limits<double>::infinity();

// top_p arrives as a float (0.8f is 0.800000012) and the probabilities come from float logits,
// so an exact comparison would put "probs 0.5, 0.3, 0.2 with p = 0.8" on either side of the
// boundary by rounding alone. A cumulative mass within this of top_p counts as reaching it.
constexpr double kTopPTolerance = 1e-6;

// Top-k up to this size keeps a heap of the k best in one scan (about one compare per token);
// larger k copies the logits and runs nth_element.
constexpr size_t kHeapTopK = 256;

// The nucleus search partitions by mass until this few candidates are left, then sorts them.
constexpr size_t kNucleusSortBelow = 32;

// A token that survived truncation. weight = exp((logit - max_logit) / T) = p / p_max.
struct Candidate {
  float weight;
  int32_t id;
};

// Strict total order (heavier first, then lower id): which tokens survive ties is then fixed,
// whatever the standard library's algorithms do with equal keys.
bool Heavier(const Candidate& a, const Candidate& b) {
  return a.weight > b.weight || (a.weight == b.weight && a.id < b.id);
}

// Per-thread buffers, grown to the largest vocabulary seen and reused by every Sampler on the
// thread, so Sample does not allocate in steady state and a Sampler costs no O(vocab) memory.
struct Scratch {
  std::vector<float> raw;        // [vocab] logits with NaN -> -inf, +inf -> FLT_MAX (rare)
  std::vector<float> raw_exp;    // [vocab] exp(raw - raw_max)
  std::vector<float> penalized;  // [vocab] logits after penalties
  std::vector<float> values;     // [vocab] copy permuted by nth_element (large top-k)
  std::vector<Candidate> cand;   // [vocab] tokens still in the running
  std::vector<Candidate> heap;   // [top_k] small top-k selection
  std::vector<std::pair<float, int32_t>> top;  // [<= kMaxLogprobs] (raw logit, id), best first
};

Scratch& GetScratch() {
  thread_local Scratch scratch;
  return scratch;
}

float Max(std::span<const float> x) {
  float m = -kInf;
  for (float v : x) m = std::max(m, v);  // skips NaN
  return m;
}

// out[i] = exp(x[i] - x_max); returns the sum in double. Four partial sums in a fixed order:
// deterministic, and not one long dependency chain.
double ExpAndSum(std::span<const float> x, float x_max, std::span<float> out) {
  const size_t n = x.size();
  for (size_t i = 0; i < n; ++i) out[i] = ExpNonPositive(x[i] - x_max);
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += out[i];
    s1 += out[i + 1];
    s2 += out[i + 2];
    s3 += out[i + 3];
  }
  for (; i < n; ++i) s0 += out[i];
  return (s0 + s1) + (s2 + s3);
}

// First index of the largest value (ties -> lowest id).
int32_t Argmax(std::span<const float> x) {
  size_t best = 0;
  for (size_t i = 1; i < x.size(); ++i) {
    if (x[i] > x[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

// Reorders cand so that its first `keep` entries are the smallest set of heaviest candidates
// whose weights sum to at least `target`, and returns keep (all of cand if it falls short).
// Quickselect on mass, expected O(n) rather than a full sort. Hand-written partition so the
// resulting order, which the draw walks, is the same on every platform.
size_t SelectNucleus(std::span<Candidate> cand, double target) {
  size_t lo = 0;
  size_t hi = cand.size();
  double before = 0.0;  // mass of cand[0, lo), each heavier than everything in [lo, hi)
  while (hi - lo > kNucleusSortBelow) {
    const Candidate& a = cand[lo];
    const Candidate& b = cand[lo + (hi - lo) / 2];
    const Candidate& c = cand[hi - 1];
    const Candidate pivot = Heavier(a, b) ? (Heavier(b, c) ? b : (Heavier(a, c) ? c : a))
                                          : (Heavier(a, c) ? a : (Heavier(b, c) ? c : b));
    size_t mid = lo;
    double heavy = 0.0;
    for (size_t i = lo; i < hi; ++i) {
      if (Heavier(cand[i], pivot)) {
        heavy += cand[i].weight;
        std::swap(cand[i], cand[mid++]);
      }
    }
    // Put the pivot right after the heavier part (ids are unique).
    for (size_t i = mid; i < hi; ++i) {
      if (cand[i].id == pivot.id) {
        std::swap(cand[i], cand[mid]);
        break;
      }
    }
    if (before + heavy >= target) {
      hi = mid;
    } else if (before + heavy + pivot.weight >= target) {
      return mid + 1;
    } else {
      before += heavy + pivot.weight;
      lo = mid + 1;
    }
  }
  std::sort(cand.begin() + lo, cand.begin() + hi, Heavier);
  for (size_t i = lo; i < hi; ++i) {
    before += cand[i].weight;
    if (before >= target) return i + 1;
  }
  return hi;  // short only by summation-order rounding, or the whole set is short
}

uint64_t RandomSeed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ static_cast<uint64_t>(rd());
}

}  // namespace

Sampler::Sampler(const SamplingParams& params, std::vector<int32_t> prompt_tokens)
    : params_(params), rng_(params.seed.has_value() ? *params.seed : RandomSeed()) {
  KVASIR_DCHECK(ValidateSamplingParams(params, std::numeric_limits<int32_t>::max()).ok());
  // Only the repetition penalty looks at the prompt; keep it only when it is on.
  if (params_.repetition_penalty != 1.0f) {
    std::sort(prompt_tokens.begin(), prompt_tokens.end());
    prompt_tokens.erase(std::unique(prompt_tokens.begin(), prompt_tokens.end()),
                        prompt_tokens.end());
    prompt_unique_ = std::move(prompt_tokens);
  }
}

void Sampler::Resume(const std::vector<int32_t>& tokens) {
  for (int32_t t : tokens) {
    generated_.push_back(t);
    ++generated_counts_[t];
    // Sample draws one uniform per token when it samples at all (not greedy; a row of only
    // -inf logits, which draws none, cannot occur in a stream that produced tokens).
    if (params_.temperature >= kGreedyTemperature) (void)NextUniform();
  }
}

double Sampler::NextUniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

bool Sampler::HasPenalties() const {
  const bool repetition =
      params_.repetition_penalty != 1.0f && (!prompt_unique_.empty() || !generated_counts_.empty());
  const bool occurrence = (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) &&
                          !generated_counts_.empty();
  return repetition || occurrence;
}

// Same arithmetic and order as vLLM's apply_penalties: repetition over prompt + output, then
// frequency (times the count), then presence, all in fp32. Ids outside the vocabulary are
// ignored. Division by a penalty < 1 may overflow; it saturates at FLT_MAX so that no +inf
// reaches the softmax.
void Sampler::ApplyPenalties(std::span<float> logits) const {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  const float rep = params_.repetition_penalty;
  auto repetition = [rep](float v) {
    if (rep == 1.0f) return v;
    return v > 0.0f ? std::min(v / rep, kFloatMax) : v * rep;
  };
  for (int32_t t : prompt_unique_) {
    if (t < 0 || t >= vocab || generated_counts_.contains(t)) continue;
    logits[t] = repetition(logits[t]);
  }
  for (const auto& [t, count] : generated_counts_) {
    if (t < 0 || t >= vocab) continue;
    float v = repetition(logits[t]);
    v -= params_.frequency_penalty * static_cast<float>(count);
    v -= params_.presence_penalty;
    logits[t] = std::min(v, kFloatMax);
  }
}

SampleResult Sampler::Sample(std::span<const float> logits) {
  KVASIR_CHECK(!logits.empty());
  const size_t vocab = logits.size();
  Scratch& s = GetScratch();
  s.raw_exp.resize(vocab);

  // Raw log-softmax normalizer (for the reported logprobs); the exps are kept for reuse.
  std::span<const float> raw = logits;
  float raw_max = Max(raw);
  double raw_sum = raw_max == -kInf ? 0.0 : ExpAndSum(raw, raw_max, s.raw_exp);
  // NaN (which would also break the strict weak order sorting needs) shows up as a NaN sum;
  // +inf as the max; all -inf / NaN as a -inf max. Rare: sanitize a copy and redo.
  if (std::isnan(raw_sum) || raw_max == kInf || raw_max == -kInf) {
    s.raw.resize(vocab);
    for (size_t i = 0; i < vocab; ++i) {
      const float v = logits[i];
      s.raw[i] = std::isnan(v) ? -kInf : std::min(v, kFloatMax);
    }
    raw = s.raw;
    raw_max = Max(raw);
    raw_sum = raw_max == -kInf ? 0.0 : ExpAndSum(raw, raw_max, s.raw_exp);
  }
  // All logits -inf: every token is impossible; logprobs are -inf rather than NaN.
  const double raw_lse = raw_max == -kInf ? kDoubleInf : raw_max + std::log(raw_sum);
  auto raw_logprob = [raw_lse](float v) {
    return static_cast<float>(static_cast<double>(v) - raw_lse);
  };

  std::span<const float> x = raw;
  if (HasPenalties()) {
    s.penalized.assign(raw.begin(), raw.end());
    ApplyPenalties(s.penalized);
    x = s.penalized;
  }

  int32_t token = Argmax(x);
  const float x_max = x[token];
  if (params_.temperature >= kGreedyTemperature && x_max != -kInf) {
    // Unpenalized at T = 1 (the common case), the weights are the raw exps already computed.
    const bool reuse_raw_exp = x.data() == raw.data() && params_.temperature == 1.0f;
    const float inv_t = 1.0f / params_.temperature;
    auto weight = [&](size_t i) {
      return reuse_raw_exp ? s.raw_exp[i] : ExpNonPositive((x[i] - x_max) * inv_t);
    };
    const float min_p = params_.min_p;
    std::vector<Candidate>& cand = s.cand;
    size_t n = 0;
    double topk_mass = 0.0;  // top-p's denominator: includes tokens min-p drops
    const size_t k = params_.top_k > 0 ? static_cast<size_t>(params_.top_k) : vocab;

    // Top-k, then min-p. min-p may run before top-p: p / p_max does not change when top-k or
    // top-p renormalize, and p_max always survives them, so it only ever cuts a tail of the
    // order that top-p also works on.
    if (k < vocab && k <= kHeapTopK) {
      // Heap of the k best by (logit, lower id); with `better` as its less-than, the top is the
      // worst of them. Ids arrive in ascending order, so a later equal logit never displaces
      // an earlier one.
      auto better = [&x](const Candidate& a, const Candidate& b) {
        return x[a.id] > x[b.id] || (x[a.id] == x[b.id] && a.id < b.id);
      };
      std::vector<Candidate>& heap = s.heap;
      heap.clear();
      for (size_t i = 0; i < k; ++i) heap.push_back({0.0f, static_cast<int32_t>(i)});
      std::make_heap(heap.begin(), heap.end(), better);
      for (size_t i = k; i < vocab; ++i) {
        if (!(x[i] > x[heap.front().id])) continue;
        std::pop_heap(heap.begin(), heap.end(), better);
        heap.back().id = static_cast<int32_t>(i);
        std::push_heap(heap.begin(), heap.end(), better);
      }
      // Id order, so the draw below does not depend on the library's heap layout.
      std::sort(heap.begin(), heap.end(),
                [](const Candidate& a, const Candidate& b) { return a.id < b.id; });
      cand.resize(std::max(cand.size(), k));
      for (const Candidate& c : heap) {
        const float w = weight(c.id);
        topk_mass += w;
        if (w >= min_p && w > 0.0f) cand[n++] = {w, c.id};
      }
    } else {
      // kth: the k-th largest logit; keep all above it and, among those equal to it, the
      // lowest ids until k are kept. One pass in id order.
      float kth = -kInf;
      size_t ties_left = vocab;
      if (k < vocab) {
        s.values.assign(x.begin(), x.end());
        std::nth_element(s.values.begin(), s.values.begin() + (k - 1), s.values.end(),
                         std::greater<float>());
        kth = s.values[k - 1];
        // nth_element leaves every value > kth in front of position k - 1.
        const size_t above = std::count_if(s.values.begin(), s.values.begin() + (k - 1),
                                           [kth](float v) { return v > kth; });
        ties_left = k - above;
      }
      cand.resize(std::max(cand.size(), vocab));
      for (size_t i = 0; i < vocab; ++i) {
        const float v = x[i];
        if (v < kth) continue;
        if (v == kth) {
          if (ties_left == 0) continue;
          --ties_left;
        }
        const float w = weight(i);
        topk_mass += w;
        if (w >= min_p && w > 0.0f) cand[n++] = {w, static_cast<int32_t>(i)};
      }
    }
    KVASIR_DCHECK(n > 0);  // the argmax has weight 1 and survives every filter

    // Top-p: the smallest set of the heaviest candidates whose mass reaches top_p of the top-k
    // mass. Tokens min-p dropped are lighter than all of that set's members, so the mass of
    // any prefix of the order is the same with or without them.
    if (params_.top_p < 1.0f) {
      const double target = (static_cast<double>(params_.top_p) - kTopPTolerance) * topk_mass;
      n = SelectNucleus(std::span<Candidate>(cand.data(), n), target);
    }

    // Inverse-CDF draw over the kept candidates (cumulative sum in double).
    double total = 0.0;
    for (size_t j = 0; j < n; ++j) total += cand[j].weight;
    const double u = NextUniform() * total;
    double cum = 0.0;
    token = cand[n - 1].id;  // if rounding leaves u >= the final sum
    for (size_t j = 0; j < n; ++j) {
      cum += cand[j].weight;
      if (u < cum) {
        token = cand[j].id;
        break;
      }
    }
  }

  SampleResult result;
  result.token = token;
  result.logprob = raw_logprob(raw[token]);

  // Top-n raw logprobs: insertion into a short sorted list. Ids in ascending order, so an
  // equal logit never displaces a lower id.
  const size_t top_n = std::min(static_cast<size_t>(std::max(params_.logprobs, 0)), vocab);
  if (top_n > 0) {
    auto& top = s.top;
    top.clear();
    for (size_t i = 0; i < vocab; ++i) {
      const float v = raw[i];
      if (top.size() == top_n) {
        if (!(v > top.back().first)) continue;
        top.pop_back();
      }
      auto pos = std::find_if(top.begin(), top.end(), [v](const auto& e) { return e.first < v; });
      top.insert(pos, {v, static_cast<int32_t>(i)});
    }
    result.top.reserve(top.size());
    for (const auto& [v, id] : top) result.top.push_back({id, raw_logprob(v)});
  }

  generated_.push_back(token);
  ++generated_counts_[token];
  return result;
}

}  // namespace kvasir
