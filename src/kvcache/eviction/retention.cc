#include "kvcache/eviction/retention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/logging.h"

namespace kvasir {

std::vector<HeadObservation> ObserveLayer(int32_t num_heads, int32_t num_kv_heads,
                                          int32_t head_dim, int32_t prompt_len, int32_t window,
                                          const float* q, int64_t q_stride, float scale,
                                          const KvRowReader& rows) {
  KVASIR_CHECK(num_kv_heads > 0 && num_heads % num_kv_heads == 0 && prompt_len > 0);
  const int32_t G = num_heads / num_kv_heads, d = head_dim, P = prompt_len;
  const int32_t w = std::min(window, P);
  std::vector<HeadObservation> out(num_kv_heads);
  std::vector<float> k(static_cast<size_t>(P) * d), v(static_cast<size_t>(P) * d);
  std::vector<double> logit(P), sem(d);
  for (int32_t kh = 0; kh < num_kv_heads; ++kh) {
    for (int32_t t = 0; t < P; ++t) rows(kh, t, k.data() + int64_t{t} * d, v.data() + int64_t{t} * d);
    HeadObservation& o = out[kh];
    o.scores.assign(P, 0.0f);
    std::fill(sem.begin(), sem.end(), 0.0);
    std::vector<double> acc(P, 0.0);
    for (int32_t i = 0; i < w; ++i) {
      const int32_t pos = P - w + i;  // attends over [0, pos]
      for (int32_t g = 0; g < G; ++g) {
        const float* qr = q + i * q_stride + static_cast<int64_t>(kh * G + g) * d;
        double m = -std::numeric_limits<double>::infinity();
        for (int32_t t = 0; t <= pos; ++t) {
          const float* kr = k.data() + int64_t{t} * d;
          double s = 0;
          for (int32_t j = 0; j < d; ++j) s += static_cast<double>(qr[j]) * kr[j];
          logit[t] = s * scale;
          m = std::max(m, logit[t]);
        }
        double l = 0;
        for (int32_t t = 0; t <= pos; ++t) l += (logit[t] = std::exp(logit[t] - m));
        for (int32_t t = 0; t <= pos; ++t) {
          const double a = logit[t] / l;
          acc[t] += a;
          const float* vr = v.data() + int64_t{t} * d;
          for (int32_t j = 0; j < d; ++j) sem[j] += a * vr[j];
        }
      }
    }
    for (int32_t t = 0; t < P; ++t) o.scores[t] = static_cast<float>(acc[t]);
    o.semantic.resize(d);
    for (int32_t j = 0; j < d; ++j) o.semantic[j] = static_cast<float>(sem[j] / (static_cast<double>(w) * G));
  }
  return out;
}

std::vector<float> AvgPool(std::span<const float> x, int32_t kernel) {
  KVASIR_CHECK(kernel >= 1 && kernel % 2 == 1);
  const int64_t n = static_cast<int64_t>(x.size()), r = kernel / 2;
  std::vector<double> prefix(n + 1, 0.0);
  for (int64_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + x[i];
  std::vector<float> out(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = std::max<int64_t>(0, i - r), b = std::min<int64_t>(n, i + r + 1);
    out[i] = static_cast<float>((prefix[b] - prefix[a]) / static_cast<double>(b - a));
  }
  return out;
}

std::vector<int32_t> TopKInRange(std::span<const float> x, int32_t begin, int32_t end, int32_t k) {
  begin = std::max(begin, 0);
  end = std::min<int32_t>(end, static_cast<int32_t>(x.size()));
  if (end <= begin || k <= 0) return {};
  std::vector<int32_t> idx(end - begin);
  std::iota(idx.begin(), idx.end(), begin);
  k = std::min<int32_t>(k, static_cast<int32_t>(idx.size()));
  auto better = [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

std::vector<bool> HeterogeneousHeads(std::span<const HeadObservation> heads, int32_t count) {
  const size_t n = heads.size();
  std::vector<bool> out(n, false);
  if (n == 0 || count <= 0) return out;
  const size_t d = heads[0].semantic.size();
  std::vector<double> center(d, 0.0);
  for (const HeadObservation& h : heads) {
    for (size_t j = 0; j < d; ++j) center[j] += h.semantic[j] / static_cast<double>(n);
  }
  double cn = 0;
  for (double c : center) cn += c * c;
  cn = std::sqrt(cn);
  std::vector<double> dist(n);
  for (size_t i = 0; i < n; ++i) {
    double dot = 0, hn = 0;
    for (size_t j = 0; j < d; ++j) {
      dot += heads[i].semantic[j] * center[j];
      hn += static_cast<double>(heads[i].semantic[j]) * heads[i].semantic[j];
    }
    hn = std::sqrt(hn);
    dist[i] = (hn > 0 && cn > 0) ? 1.0 - dot / (hn * cn) : 0.0;
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return dist[a] > dist[b]; });
  for (int32_t i = 0; i < std::min<int32_t>(count, static_cast<int32_t>(n)); ++i) out[order[i]] = true;
  return out;
}

namespace {

HeadRetention KeepAll(int32_t n) {
  HeadRetention r;
  r.keep.resize(n);
  std::iota(r.keep.begin(), r.keep.end(), 0);
  r.pinned = n;
  r.cap = -1;
  return r;
}

// Sinks, a recent window and (with scores) the top middle tokens, `budget` in all.
HeadRetention SinksRecentMiddle(int32_t n, int32_t budget, int32_t sink, int32_t recent,
                                const std::vector<float>* pooled) {
  if (budget >= n) return KeepAll(n);
  const int32_t s = std::min(sink, budget);
  int32_t r = std::min(recent, budget - s);
  if (!pooled) r = budget - s;  // nothing to rank the middle by: all to the recent window
  const int32_t m = budget - s - r;
  HeadRetention out;
  for (int32_t t = 0; t < s; ++t) out.keep.push_back(t);
  if (m > 0) {
    for (int32_t t : TopKInRange(*pooled, s, n - r, m)) out.keep.push_back(t);
  }
  for (int32_t t = n - r; t < n; ++t) out.keep.push_back(t);
  out.pinned = static_cast<int32_t>(out.keep.size()) - r;
  out.cap = static_cast<int32_t>(out.keep.size());
  return out;
}

// The last `window` tokens plus the listed others (ascending, all before the window).
HeadRetention WindowPlus(int32_t n, int32_t window, std::vector<int32_t> chosen) {
  HeadRetention out;
  out.keep = std::move(chosen);
  out.pinned = static_cast<int32_t>(out.keep.size());
  for (int32_t t = n - window; t < n; ++t) out.keep.push_back(t);
  out.cap = static_cast<int32_t>(out.keep.size());
  return out;
}

// The k top pooled scores over tokens [lo, lo + span) of the listed heads taken together (each
// head's scores sum to the same total, so they compare across heads): per listed head, its
// chosen tokens, ascending.
std::vector<std::vector<int32_t>> JointTopK(const std::vector<std::vector<float>>& pooled,
                                            const std::vector<int32_t>& heads, int32_t lo,
                                            int32_t span, int32_t k) {
  std::vector<std::vector<int32_t>> chosen(heads.size());
  if (span <= 0 || k <= 0) return chosen;
  std::vector<float> all(heads.size() * static_cast<size_t>(span));
  for (size_t i = 0; i < heads.size(); ++i) {
    std::copy(pooled[heads[i]].begin() + lo, pooled[heads[i]].begin() + lo + span,
              all.begin() + static_cast<int64_t>(i) * span);
  }
  for (int32_t i : TopKInRange(all, 0, static_cast<int32_t>(all.size()), k)) {
    chosen[i / span].push_back(lo + i % span);
  }
  return chosen;
}

}  // namespace

std::vector<HeadRetention> PlanLayerRetention(const KvPolicy& policy, int32_t num_kv_heads,
                                              int32_t prompt_len,
                                              std::span<const HeadObservation> obs) {
  const int32_t n = prompt_len, KVH = num_kv_heads;
  std::vector<HeadRetention> out(KVH);
  if (!policy.Compresses(n)) {
    for (auto& r : out) r = KeepAll(n);
    return out;
  }
  const int32_t B = policy.BudgetFor(n);
  std::vector<std::vector<float>> pooled;
  if (policy.NeedsScores()) {
    KVASIR_CHECK(static_cast<int32_t>(obs.size()) == KVH);
    for (const HeadObservation& h : obs) pooled.push_back(AvgPool(h.scores, policy.pooling));
  }
  switch (policy.kind) {
    case KvPolicyKind::kFull:
      break;
    case KvPolicyKind::kStreaming:
      for (auto& r : out) r = SinksRecentMiddle(n, B, policy.sink, B, nullptr);
      break;
    case KvPolicyKind::kSnapKv: {
      const int32_t w = std::min(policy.window, B);
      for (int32_t kh = 0; kh < KVH; ++kh) {
        out[kh] = WindowPlus(n, w, TopKInRange(pooled[kh], 0, n - w, B - w));
      }
      break;
    }
    case KvPolicyKind::kAdaKv: {
      // The window per head, then the layer's remaining budget over all heads' tokens at once.
      const int32_t w = std::min(policy.window, B);
      std::vector<int32_t> heads(KVH);
      std::iota(heads.begin(), heads.end(), 0);
      std::vector<std::vector<int32_t>> chosen = JointTopK(pooled, heads, 0, n - w, KVH * (B - w));
      for (int32_t kh = 0; kh < KVH; ++kh) out[kh] = WindowPlus(n, w, std::move(chosen[kh]));
      break;
    }
    case KvPolicyKind::kTaskKv: {
      int32_t nh = static_cast<int32_t>(std::lround(policy.beta * KVH));
      if (policy.beta > 0 && nh == 0) nh = 1;
      nh = std::min(nh, KVH);
      const std::vector<bool> hetero = HeterogeneousHeads(obs, nh);
      // A heterogeneous head gets hetero_share times the layer's average budget (the whole
      // prompt at most); the ordinary heads split the rest evenly for their sinks and recent
      // windows, and spend what is left of it on middle tokens chosen across all of them by
      // pooled score (Ada-KV's redistribution among the ordinary heads).
      const int64_t total = int64_t{B} * KVH;
      int32_t hetero_budget = B;
      if (nh < KVH) {
        const int32_t floor_budget = std::min(B, policy.sink + policy.recent);
        hetero_budget = static_cast<int32_t>(std::clamp<int64_t>(
            std::min<int64_t>(static_cast<int64_t>(policy.hetero_share * B),
                              (total - int64_t{KVH - nh} * floor_budget) / std::max(nh, 1)),
            B, n));
      }
      const int32_t other_budget =
          nh < KVH ? static_cast<int32_t>((total - int64_t{nh} * hetero_budget) / (KVH - nh)) : B;
      std::vector<int32_t> ordinary;
      for (int32_t kh = 0; kh < KVH; ++kh) {
        if (hetero[kh]) {
          out[kh] = SinksRecentMiddle(n, hetero_budget, policy.sink, policy.recent, &pooled[kh]);
          out[kh].heterogeneous = true;
        } else {
          ordinary.push_back(kh);
        }
      }
      if (ordinary.empty()) break;
      if (other_budget >= n) {
        for (int32_t kh : ordinary) out[kh] = KeepAll(n);
        break;
      }
      const int32_t s = std::min(policy.sink, other_budget);
      const int32_t r = std::min(policy.recent, other_budget - s);
      const int32_t m = other_budget - s - r;  // middle tokens per ordinary head, on average
      std::vector<std::vector<int32_t>> middle =
          JointTopK(pooled, ordinary, s, n - r - s, m * static_cast<int32_t>(ordinary.size()));
      for (size_t i = 0; i < ordinary.size(); ++i) {
        std::vector<int32_t> pinned(s);
        std::iota(pinned.begin(), pinned.end(), 0);  // the sinks, then the chosen middle
        pinned.insert(pinned.end(), middle[i].begin(), middle[i].end());
        out[ordinary[i]] = WindowPlus(n, r, std::move(pinned));
      }
      break;
    }
  }
  return out;
}

}  // namespace kvasir
