#include <atomic>
#include <cstdlib>
#include <fstream>
#include <cmath>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "common/mapped_file.h"
#include "common/secret.h"
#include "common/thread_pool.h"
#include "gtest/gtest.h"

namespace kvasir {
namespace {

TEST(ThreadPool, CoversRangeExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 7, 1000}) {
      std::vector<std::atomic<int>> hits(n);
      for (int rep = 0; rep < 3; ++rep) {
        pool.ParallelFor(n, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[i]++;
        });
      }
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 3) << threads << " " << n;
    }
  }
}

TEST(DType, HalfRoundTrips) {
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0, 10);
  for (int i = 0; i < 10000; ++i) {
    float x = d(rng);
    float h = F16ToF32(F32ToF16(x));
    EXPECT_NEAR(h, x, std::fabs(x) * 1e-3 + 1e-7);
    float b = BF16ToF32(F32ToBF16(x));
    EXPECT_NEAR(b, x, std::fabs(x) * 8e-3 + 1e-30);
  }
  // Exact values: 1.0, -2.0, 65504 (max half), smallest subnormal.
  EXPECT_EQ(F32ToF16(1.0f), 0x3c00);
  EXPECT_EQ(F32ToF16(-2.0f), 0xc000);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7bff);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F32ToBF16(1.0f), 0x3f80);
  EXPECT_TRUE(std::isinf(F16ToF32(0x7c00)));
  EXPECT_TRUE(std::isnan(F16ToF32(0x7e00)));
}

TEST(DType, ParseRejectsUnknown) {
  EXPECT_TRUE(ParseDType("bf16").ok());
  EXPECT_FALSE(ParseDType("I8").ok());
}

TEST(Secret, EqualsComparesWholeValues) {
  EXPECT_TRUE(SecretEquals("sk-abc", "sk-abc"));
  EXPECT_FALSE(SecretEquals("sk-abc", "sk-abd"));
  EXPECT_FALSE(SecretEquals("sk-abc", "sk-ab"));
  EXPECT_FALSE(SecretEquals("", "x"));
  EXPECT_TRUE(SecretEquals("", ""));
  EXPECT_FALSE(SecretEquals(std::string("a\0b", 3), "a"));
}

TEST(Secret, BearerMatchesOnlyTheExactHeader) {
  EXPECT_TRUE(BearerMatches("Bearer sk-1", "sk-1"));
  EXPECT_FALSE(BearerMatches("Bearer sk-12", "sk-1"));
  EXPECT_FALSE(BearerMatches("bearer sk-1", "sk-1"));
  EXPECT_FALSE(BearerMatches("sk-1", "sk-1"));
  EXPECT_FALSE(BearerMatches("", "sk-1"));
  EXPECT_FALSE(BearerMatches("Bearer ", "sk-1"));
}

TEST(Secret, RandomSecretsAreFreshHex) {
  auto a = RandomSecret(), b = RandomSecret();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 64u);
  EXPECT_NE(*a, *b);
  EXPECT_EQ(a->find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(Secret, ResolveTakesFlagThenFileThenEnvironment) {
  const std::string path = ::testing::TempDir() + "/kvasir_secret_test_key";
  { std::ofstream(path) << "from-file\n"; }
  setenv("KVASIR_SECRET_TEST_ENV", "from-env", 1);
  EXPECT_EQ(*ResolveSecret("API key", "from-flag", path, "KVASIR_SECRET_TEST_ENV"), "from-flag");
  EXPECT_EQ(*ResolveSecret("API key", "", path, "KVASIR_SECRET_TEST_ENV"), "from-file");
  EXPECT_EQ(*ResolveSecret("API key", "", "", "KVASIR_SECRET_TEST_ENV"), "from-env");
  unsetenv("KVASIR_SECRET_TEST_ENV");
  EXPECT_EQ(*ResolveSecret("API key", "", "", "KVASIR_SECRET_TEST_ENV"), "");
  auto missing = ResolveSecret("API key", "", path + ".missing", nullptr);
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("API key"), std::string::npos);
  { std::ofstream(path) << "\n"; }
  EXPECT_FALSE(ResolveSecret("cluster secret", "", path, nullptr).ok());
}

TEST(MappedFile, MissingFileIsNotFound) {
  auto f = MappedFile::Open("/nonexistent/kvasir/file");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvasir
