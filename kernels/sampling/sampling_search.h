// The threshold searches of the sampling kernel (sampling.cu) as host/device code, so that their
// decisions can be checked on the CPU (sampling_ref_test.cc drives them with a sequential
// histogram and compares the kept set with the reference's). The kernel supplies, per level, a
// histogram over kSearchBins digits of the tokens the level looks at, and the pick: the first
// bin, from the highest digit down, where the running count (top-k) or mass (top-p) reaches
// Need(). No CUDA headers.
//
// The population searched is the weighted tokens (y >= kMinLogWeight, a prefix of the order);
// tokens below it weigh nothing, so whether a filter keeps them does not change the draw.
// Level 0 bins them by log weight (1/51 of a bit per bin: real logits spread over hundreds of
// bins, so the shared-memory atomics rarely collide); the chosen bin's key range is found by
// bisection over the keys; later levels split that range by 11-bit digits of (key - lo) until it
// is a single key: at most 4 levels, usually 2 or 3, fewer when a bin is taken whole.
#pragma once

#include <cstdint>

#include "kernels/sampling/sampling_common.h"

namespace kvasir::cuda::sampling_internal {

inline constexpr int kSearchBins = 2048;
inline constexpr float kLogWeightBinsPerBit = 51.0f;  // 40 * 51 = 2040 < kSearchBins

// A prefix of the order (logit descending, id ascending): every token whose key is above `key`,
// and the first `ties` tokens by id whose key equals it (kAllTies: all of them).
struct Cut {
  uint32_t key;
  uint32_t ties;
};
// Keeps every token: every sanitized key is >= key(-inf) = 0x007FFFFF. (A function: nvcc does
// not let device code use a namespace-scope constexpr object of class type.)
KVASIR_SAMPLING_HD Cut NoCut() { return Cut{0u, kAllTies}; }

// Both are prefixes of one order, so the shorter is their intersection.
KVASIR_SAMPLING_HD Cut Shorter(Cut a, Cut b) {
  if (a.key != b.key) return a.key > b.key ? a : b;
  return a.ties < b.ties ? a : b;
}

// The weight a token keeps for the draw: its weight if it is inside `cut` (tie_rank: the number
// of tokens with a lower id and the same key, only looked at when key == cut.key) and passes
// min-p (y >= min_y), else 0.
KVASIR_SAMPLING_HD uint64_t CutWeight(uint32_t key, float y, Cut cut, uint32_t tie_rank,
                                      float min_y) {
  if (key < cut.key) return 0;
  if (key == cut.key && cut.ties != kAllTies && tie_rank >= cut.ties) return 0;
  return y >= min_y ? FixedWeight(y) : 0;
}

// Level-0 digit of a weighted token (y in [kMinLogWeight, 0]): heavier tokens, higher digits.
KVASIR_SAMPLING_HD uint32_t LogWeightDigit(float y) {
  const float t = MulRn(-y, kLogWeightBinsPerBit);  // [0, 2040]
  return static_cast<uint32_t>(kSearchBins - 1) - static_cast<uint32_t>(t);
}

// Which tokens a histogram pass looks at, and their digit.
struct SearchLevel {
  bool first = true;  // all weighted tokens, digit LogWeightDigit(y)
  uint32_t lo = 0;    // otherwise the weighted tokens with key in [lo, hi],
  uint32_t hi = 0;    // digit (key - lo) >> shift
  int shift = 0;
};

// Whether the token (sanitized logit v, key OrderKey(v)) is in the level; if so its digit and
// log weight.
KVASIR_SAMPLING_HD bool LevelDigit(const SearchLevel& level, float v, uint32_t key, float max,
                                   float scale, uint32_t* digit, float* y) {
  if (!level.first && (key < level.lo || key > level.hi)) return false;
  *y = LogWeight(v, max, scale);
  if (!(*y >= kMinLogWeight)) return false;
  *digit = level.first ? LogWeightDigit(*y) : (key - level.lo) >> level.shift;
  return true;
}

// The smallest key (of the row's possible logits, -inf .. max) whose level-0 digit is >= d;
// the digit is monotone in the key, -1 standing for unweighted keys.
KVASIR_SAMPLING_HD uint32_t FirstKeyWithDigit(uint32_t d, float max, float scale) {
  uint32_t lo = OrderKey(-__builtin_inff());  // digit -1 < d
  uint32_t hi = OrderKey(max);                // digit kSearchBins - 1 >= d
  while (hi - lo > 1) {
    const uint32_t mid = lo + (hi - lo) / 2;
    const float y = LogWeight(KeyToFloat(mid), max, scale);
    if (y >= kMinLogWeight && LogWeightDigit(y) >= d) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  return hi;
}

// Moves the level into the key range of the chosen digit.
KVASIR_SAMPLING_HD void Narrow(SearchLevel& level, uint32_t digit, float max, float scale) {
  uint32_t lo, hi;
  if (level.first) {
    lo = FirstKeyWithDigit(digit, max, scale);
    hi = digit + 1 < kSearchBins ? FirstKeyWithDigit(digit + 1, max, scale) - 1 : OrderKey(max);
  } else {
    lo = level.lo + (digit << level.shift);
    const uint32_t last = lo + ((1u << level.shift) - 1);
    hi = last < level.hi ? last : level.hi;
  }
  level.first = false;
  level.lo = lo;
  level.hi = hi;
  int bits = 0;
  while (bits < 32 && ((hi - lo) >> bits) != 0) ++bits;
  level.shift = bits > 11 ? bits - 11 : 0;
}

// What the kernel's histogram pass reports for one level.
struct BinPick {
  int bin = -1;               // -1: the need exceeds the level's total
  uint32_t count_before = 0;  // tokens in the bins above `bin`
  uint64_t mass_before = 0;   // and their mass
  uint32_t count = 0;         // tokens in `bin`
  uint64_t mass = 0;          // and their mass
};

// Top-k: the first k tokens of the order (0 < k < vocab). Pick by count. kept_mass (their mass)
// is only meaningful when the histograms carried mass.
struct TopKSearch {
  uint32_t k = 0;
  SearchLevel level;
  uint32_t count_above = 0;
  uint64_t mass_above = 0;
  bool done = false;
  Cut cut = NoCut();
  uint64_t kept_mass = 0;

  KVASIR_SAMPLING_HD uint64_t Need() const { return k - count_above; }

  // total_mass: the mass of all the level's tokens.
  KVASIR_SAMPLING_HD void Step(const BinPick& pick, uint64_t total_mass, float max, float scale) {
    if (pick.bin < 0) {  // fewer than k weighted tokens: top-k drops only weightless ones
      done = true;
      cut = NoCut();
      kept_mass = mass_above + total_mass;
      return;
    }
    const uint32_t need = k - count_above;
    count_above += pick.count_before;
    mass_above += pick.mass_before;
    Narrow(level, static_cast<uint32_t>(pick.bin), max, scale);
    const uint32_t need_in_bin = need - pick.count_before;  // in [1, pick.count]
    if (need_in_bin == pick.count) {  // the whole bin: every key >= its lowest
      done = true;
      cut = Cut{level.lo, kAllTies};
      kept_mass = mass_above + pick.mass;
    } else if (level.lo == level.hi) {  // the k-th key; the lowest ids among its ties
      done = true;
      cut = Cut{level.lo, need_in_bin};
      kept_mass = mass_above +
                  uint64_t{need_in_bin} * FixedWeight(LogWeight(KeyToFloat(level.lo), max, scale));
    }
  }
};

// Top-p: the shortest prefix whose mass reaches TopPTarget(top_p, base_mass), base_mass being
// the top-k mass, or (0) the mass of all tokens, known after the first histogram. Pick by mass.
struct TopPSearch {
  float top_p = 1.0f;
  uint64_t target = 0;
  SearchLevel level;
  uint64_t mass_above = 0;
  bool done = false;
  Cut cut = NoCut();

  KVASIR_SAMPLING_HD void Start(float p, uint64_t base_mass) {
    top_p = p;
    target = base_mass != 0 ? TopPTarget(p, base_mass) : 0;
  }

  KVASIR_SAMPLING_HD uint64_t Need(uint64_t total_mass) {
    if (target == 0) target = TopPTarget(top_p, total_mass);
    return target - mass_above;
  }

  KVASIR_SAMPLING_HD void Step(const BinPick& pick, float max, float scale) {
    if (pick.bin < 0) {  // cannot happen: the target never exceeds the mass
      done = true;
      cut = NoCut();
      return;
    }
    mass_above += pick.mass_before;
    Narrow(level, static_cast<uint32_t>(pick.bin), max, scale);
    const uint64_t need_in_bin = target - mass_above;  // in [1, pick.mass]
    if (pick.count == 1 || need_in_bin == pick.mass) {
      // The whole bin: every token weighs >= 1, so all of them are needed.
      done = true;
      cut = Cut{level.lo, kAllTies};
    } else if (level.lo == level.hi) {  // every token of the bin has this key and weight
      const uint64_t w = FixedWeight(LogWeight(KeyToFloat(level.lo), max, scale));
      const uint64_t n = (need_in_bin + w - 1) / w;
      done = true;
      cut = Cut{level.lo, n >= pick.count ? kAllTies : static_cast<uint32_t>(n)};
    }
  }
};

// Levels a search can take: one by log weight, then 32 bits of key in 11-bit digits.
inline constexpr int kMaxSearchLevels = 4;

}  // namespace kvasir::cuda::sampling_internal
