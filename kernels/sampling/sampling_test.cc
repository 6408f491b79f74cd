// Checks the CUDA sampling kernel: greedy rows against a CPU argmax, sampled tokens against the
// CPU reference (exactly: same weights, same RNG), the draws' frequencies against the filtered
// distribution computed in double, the raw logprobs against a double log-softmax, and the
// parameter checks. Inputs are fresh random rows; outputs are poisoned before every launch.
#include "kernels/sampling/sampling.cuh"

#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/common/cuda_test_util.h"
#include "kernels/sampling/sampling_ref.h"
#include "kernels/sampling/sampling_test_util.h"

namespace kvasir::cuda {
namespace {

using ::kvasir::testing::DeviceBuffer;

// Host rows laid out for one launch: row r at offset + r * stride (offset 1 makes every row
// misaligned for 16-byte loads).
struct Batch {
  int32_t rows = 0;
  int32_t vocab = 0;
  int64_t stride = 0;
  int64_t offset = 0;
  std::vector<float> logits;  // [offset + rows * stride]
  std::vector<SampleRowParams> params;

  std::span<const float> Row(int32_t r) const {
    return std::span<const float>(logits.data() + offset + r * stride, vocab);
  }
};

Batch MakeBatch(int32_t rows, int32_t vocab, int64_t pad, int64_t offset) {
  Batch b;
  b.rows = rows;
  b.vocab = vocab;
  b.stride = vocab + pad;
  b.offset = offset;
  b.logits.assign(offset + rows * b.stride, NAN);  // gaps are NaN: reading them would show
  b.params.resize(rows);
  return b;
}

void SetRow(Batch& b, int32_t r, const std::vector<float>& row) {
  std::copy(row.begin(), row.end(), b.logits.begin() + b.offset + r * b.stride);
}

struct Outputs {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
};

// Runs the kernel on b; tokens and logprobs are poisoned first (-1 and NaN).
void RunGpu(const Batch& b, Outputs* out) {
  DeviceBuffer<float> logits(b.logits);
  DeviceBuffer<SampleRowParams> params(b.params.size());
  DeviceBuffer<int32_t> tokens(b.rows);
  DeviceBuffer<float> logprobs(b.rows);
  ASSERT_TRUE(logits.ok() && params.ok() && tokens.ok() && logprobs.ok());
  CUDA_ASSERT_OK(cudaMemcpy(params.get(), b.params.data(),
                            b.params.size() * sizeof(SampleRowParams), cudaMemcpyHostToDevice));
  CUDA_ASSERT_OK(tokens.Poison());
  CUDA_ASSERT_OK(logprobs.Poison());
  SampleParams p;
  p.logits = logits.get() + b.offset;
  p.logits_stride = b.stride;
  p.rows = b.rows;
  p.vocab = b.vocab;
  p.params = params.get();
  p.out_tokens = tokens.get();
  p.out_logprobs = logprobs.get();
  CUDA_ASSERT_LAUNCH(InvokeSample(p, nullptr));
  out->tokens = tokens.Download();
  out->logprobs = logprobs.Download();
}

std::string Describe(const SampleRowParams& p) {
  return "T " + std::to_string(p.temperature) + " k " + std::to_string(p.top_k) + " p " +
         std::to_string(p.top_p) + " min_p " + std::to_string(p.min_p) + " seed " +
         std::to_string(p.seed) + " step " + std::to_string(p.step);
}

// (1) Greedy rows (temperature 0 or below 1e-5, whatever the other filters say) give the first
// index of the largest sanitized logit, with ties, NaN, +-inf, and all -inf rows.
TEST(Sample, GreedyIsCpuArgmax) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(std::random_device{}());
  for (int32_t vocab : {1, 7, 32000, 128256}) {
    for (int64_t offset : {0, 1}) {
      SCOPED_TRACE("vocab " + std::to_string(vocab) + " offset " + std::to_string(offset));
      const int32_t rows = 12;
      Batch b = MakeBatch(rows, vocab, offset != 0 ? 3 : 0, offset);
      for (int32_t r = 0; r < rows; ++r) {
        const auto kind = static_cast<sampling_test::RowKind>(
            r % static_cast<int>(sampling_test::RowKind::kCount));
        std::vector<float> row = sampling_test::RandomRow(kind, vocab, rng);
        if (r == rows - 1) row.assign(vocab, NAN);  // no usable logit: token 0, logprob -inf
        if (r == rows - 2) row.assign(vocab, -INFINITY);
        if (r == rows - 3 && vocab > 2) row[vocab - 1] = row[vocab / 2] = 1e30f;  // tied maxima
        SetRow(b, r, row);
        b.params[r] = sampling_test::RandomParams(vocab, rng);
        b.params[r].temperature = r % 2 == 0 ? 0.0f : 1e-6f;
      }
      Outputs out;
      ASSERT_NO_FATAL_FAILURE(RunGpu(b, &out));
      for (int32_t r = 0; r < rows; ++r) {
        const int32_t want = sampling_test::ArgmaxDouble(b.Row(r));
        ASSERT_EQ(out.tokens[r], want) << "row " << r;
        const double lp = sampling_test::LogSoftmaxDouble(b.Row(r), want);
        if (lp == -INFINITY) {
          EXPECT_EQ(out.logprobs[r], -INFINITY) << "row " << r;
        } else {
          EXPECT_NEAR(out.logprobs[r], lp, 1e-4) << "row " << r;
        }
      }
    }
  }
}

// (2) Sampled tokens equal the CPU reference's exactly, over row shapes (ties, narrow ranges,
// specials, signed zeros), parameters (each filter alone and together, edges), vocabularies and
// layouts (aligned contiguous rows; misaligned padded rows).
TEST(Sample, TokensMatchReference) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(std::random_device{}());
  int64_t sampled = 0;
  for (int32_t vocab : {1, 2, 7, 50, 129, 1000, 4099, 32000, 128256}) {
    for (int64_t offset : {0, 1}) {
      SCOPED_TRACE("vocab " + std::to_string(vocab) + " offset " + std::to_string(offset));
      const int32_t rows = vocab >= 32000 ? 48 : 160;
      Batch b = MakeBatch(rows, vocab, offset != 0 ? 5 : 0, offset);
      for (int32_t r = 0; r < rows; ++r) {
        const auto kind = static_cast<sampling_test::RowKind>(
            rng() % static_cast<int>(sampling_test::RowKind::kCount));
        SetRow(b, r, sampling_test::RandomRow(kind, vocab, rng));
        b.params[r] = sampling_test::RandomParams(vocab, rng);
      }
      Outputs out;
      ASSERT_NO_FATAL_FAILURE(RunGpu(b, &out));
      for (int32_t r = 0; r < rows; ++r) {
        SCOPED_TRACE("row " + std::to_string(r) + " " + Describe(b.params[r]));
        const SampleRowResult want = SampleRowRef(b.Row(r), b.params[r]);
        ASSERT_EQ(out.tokens[r], want.token);
        if (want.logprob == -INFINITY) {
          EXPECT_EQ(out.logprobs[r], -INFINITY);
        } else {
          EXPECT_NEAR(out.logprobs[r], want.logprob, 1e-4);
        }
        sampled += b.params[r].temperature > 0.0f;
      }
    }
  }
  EXPECT_GT(sampled, 1000);
}

// (3) 20000 draws of one row (steps 0 .. 19999, one launch) follow the filtered distribution
// computed in double; tokens outside it never appear. CheckFrequencies documents the bound.
TEST(Sample, DrawsFollowTheFilteredDistribution) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(std::random_device{}());
  auto params = [](float t, int32_t k, float p, float min_p) {
    SampleRowParams s;
    s.temperature = t;
    s.top_k = k;
    s.top_p = p;
    s.min_p = min_p;
    return s;
  };
  const SampleRowParams configs[] = {params(0.8f, 20, 0.9f, 0.02f), params(1.3f, -1, 0.7f, 0.0f),
                                     params(0.5f, 10, 1.0f, 0.1f),  params(1.0f, -1, 1.0f, 0.0f),
                                     params(2.0f, 40, 0.95f, 0.0f), params(1.0f, 5, 1.0f, 0.0f),
                                     params(0.7f, -1, 1.0f, 0.05f)};
  const int32_t vocab = 50, n = 20000;
  for (SampleRowParams p : configs) {
    SCOPED_TRACE(Describe(p));
    std::vector<float> row;
    sampling_test::Filtered want;
    do {  // avoid rows that sit on a filter boundary
      std::normal_distribution<float> nd(0.0f, 1.5f);
      row.assign(vocab, 0.0f);
      for (float& x : row) x = nd(rng);
      want = sampling_test::FilteredDouble(row, p);
    } while (want.margin < 1e-3);
    p.seed = rng();
    Batch b = MakeBatch(n, vocab, 0, 0);
    for (int32_t r = 0; r < n; ++r) {
      SetRow(b, r, row);
      b.params[r] = p;
      b.params[r].step = static_cast<uint64_t>(r);
    }
    Outputs out;
    ASSERT_NO_FATAL_FAILURE(RunGpu(b, &out));
    std::vector<int64_t> counts(vocab, 0);
    for (int32_t r = 0; r < n; ++r) {
      ASSERT_GE(out.tokens[r], 0);
      ASSERT_LT(out.tokens[r], vocab);
      ++counts[out.tokens[r]];
    }
    EXPECT_EQ(sampling_test::CheckFrequencies(counts, want.p, n), "");
    // And draw by draw, the reference's tokens.
    for (int32_t r = 0; r < n; r += 97) {
      ASSERT_EQ(out.tokens[r], SampleRowRef(row, b.params[r]).token) << "step " << r;
    }
  }
}

// (4) out_logprobs is the log-softmax of the chosen token under the raw logits, whatever the
// temperature and filters, within 1e-4 of double.
TEST(Sample, LogprobsMatchDoubleLogSoftmax) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(std::random_device{}());
  for (int32_t vocab : {3, 32000, 128256}) {
    SCOPED_TRACE("vocab " + std::to_string(vocab));
    const int32_t rows = 32;
    Batch b = MakeBatch(rows, vocab, 0, 0);
    for (int32_t r = 0; r < rows; ++r) {
      const auto kind =
          r % 2 == 0 ? sampling_test::RowKind::kNormal : sampling_test::RowKind::kSpecials;
      SetRow(b, r, sampling_test::RandomRow(kind, vocab, rng));
      b.params[r] = sampling_test::RandomParams(vocab, rng);
      b.params[r].temperature = 0.3f + 0.2f * (r % 8);
    }
    Outputs out;
    ASSERT_NO_FATAL_FAILURE(RunGpu(b, &out));
    for (int32_t r = 0; r < rows; ++r) {
      ASSERT_GE(out.tokens[r], 0);
      ASSERT_LT(out.tokens[r], vocab);
      const double lp = sampling_test::LogSoftmaxDouble(b.Row(r), out.tokens[r]);
      if (lp == -INFINITY) {
        EXPECT_EQ(out.logprobs[r], -INFINITY) << "row " << r;
      } else {
        EXPECT_NEAR(out.logprobs[r], lp, 1e-4) << "row " << r;
      }
    }
  }
}

// The logprobs output is optional.
TEST(Sample, WithoutLogprobs) {
  KVASIR_SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(std::random_device{}());
  const int32_t rows = 4, vocab = 1000;
  Batch b = MakeBatch(rows, vocab, 0, 0);
  for (int32_t r = 0; r < rows; ++r) {
    SetRow(b, r, sampling_test::RandomRow(sampling_test::RowKind::kNormal, vocab, rng));
    b.params[r] = sampling_test::RandomParams(vocab, rng);
  }
  DeviceBuffer<float> logits(b.logits);
  DeviceBuffer<SampleRowParams> params(rows);
  DeviceBuffer<int32_t> tokens(rows);
  ASSERT_TRUE(logits.ok() && params.ok() && tokens.ok());
  CUDA_ASSERT_OK(cudaMemcpy(params.get(), b.params.data(), rows * sizeof(SampleRowParams),
                            cudaMemcpyHostToDevice));
  CUDA_ASSERT_OK(tokens.Poison());
  SampleParams p;
  p.logits = logits.get();
  p.rows = rows;
  p.vocab = vocab;
  p.params = params.get();
  p.out_tokens = tokens.get();
  CUDA_ASSERT_LAUNCH(InvokeSample(p, nullptr));
  const std::vector<int32_t> got = tokens.Download();
  for (int32_t r = 0; r < rows; ++r) EXPECT_EQ(got[r], SampleRowRef(b.Row(r), b.params[r]).token);
}

// (5) Bad parameters are refused before any device work (so this runs without a GPU too).
TEST(Sample, BadParamsAreInvalidValue) {
  float logit = 0.0f;
  SampleRowParams row_params;
  int32_t token = 0;
  SampleParams good;
  good.logits = &logit;
  good.rows = 1;
  good.vocab = 1;
  good.params = &row_params;
  good.out_tokens = &token;
  auto with = [&good](auto edit) {
    SampleParams p = good;
    edit(p);
    return InvokeSample(p, nullptr);
  };
  EXPECT_EQ(with([](SampleParams& p) { p.rows = -1; }), cudaErrorInvalidValue);
  EXPECT_EQ(with([](SampleParams& p) { p.vocab = 0; }), cudaErrorInvalidValue);
  EXPECT_EQ(with([](SampleParams& p) { p.vocab = -3; }), cudaErrorInvalidValue);
  EXPECT_EQ(with([](SampleParams& p) { p.vocab = kMaxSampleVocab + 1; }), cudaErrorInvalidValue);
  EXPECT_EQ(with([](SampleParams& p) { p.logits_stride = -1; }), cudaErrorInvalidValue);
  EXPECT_EQ(with([](SampleParams& p) {
              p.vocab = 4;
              p.logits_stride = 3;
            }),
            cudaErrorInvalidValue);
  EXPECT_EQ(with([](SampleParams& p) { p.logits = nullptr; }), cudaErrorInvalidValue);
  EXPECT_EQ(with([](SampleParams& p) { p.params = nullptr; }), cudaErrorInvalidValue);
  EXPECT_EQ(with([](SampleParams& p) { p.out_tokens = nullptr; }), cudaErrorInvalidValue);
  // Nothing to do is not an error, pointers or not.
  EXPECT_EQ(with([](SampleParams& p) {
              p.rows = 0;
              p.logits = nullptr;
              p.params = nullptr;
              p.out_tokens = nullptr;
            }),
            cudaSuccess);
}

}  // namespace
}  // namespace kvasir::cuda
