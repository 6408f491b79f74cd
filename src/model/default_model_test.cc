#include "model/default_model.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "model/testing_util.h"

namespace kvasir {
namespace {

namespace fs = std::filesystem;

TEST(DefaultModel, FetchesAndVerifiesFromAMirror) {
  std::string src = testing::Stories260KDir();
  ASSERT_FALSE(src.empty());
  testing::TempDir mirror, cache;
  fs::copy_file(src + "/model.bin", mirror.path() + "/stories260K.bin");
  fs::copy_file(src + "/tokenizer.bin", mirror.path() + "/tok512.bin");
  auto dir = FetchDefaultModel("file://" + mirror.path(), cache.path() + "/stories260K");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*Sha256File(*dir + "/model.bin"),
            "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696");
  EXPECT_TRUE(fs::exists(*dir + "/tokenizer.bin"));
}

TEST(DefaultModel, RejectsACorruptDownloadAndLeavesNothing) {
  std::string src = testing::Stories260KDir();
  testing::TempDir mirror, cache;
  fs::copy_file(src + "/model.bin", mirror.path() + "/stories260K.bin");
  std::ofstream(mirror.path() + "/stories260K.bin", std::ios::binary | std::ios::app) << "x";
  fs::copy_file(src + "/tokenizer.bin", mirror.path() + "/tok512.bin");
  const std::string dest = cache.path() + "/stories260K";
  auto dir = FetchDefaultModel("file://" + mirror.path(), dest);
  ASSERT_FALSE(dir.ok());
  EXPECT_NE(dir.status().message().find("SHA-256"), std::string::npos) << dir.status();
  EXPECT_TRUE(fs::is_empty(dest));
  auto missing = FetchDefaultModel("file://" + mirror.path() + "/nope", dest);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace kvasir
