// Test helpers: locating the shared stories260K model, temporary directories.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "model/default_model.h"
#include "model/tokenizer/tokenizer.h"
#include "model/weights.h"

namespace kvasir::testing {

// The stories260K model: ../shared/models/stories260K found from the source root (tests run
// there), else $KVASIR_MODEL_DIR, else the user cache that `kvasir` downloads into.
inline std::string Stories260KDir() {
  namespace fs = std::filesystem;
  for (fs::path p = fs::current_path(); !p.empty(); p = p.parent_path()) {
    fs::path c = p / "shared" / "models" / "stories260K";
    if (fs::exists(c / "model.bin")) return c.string();
    if (p == p.parent_path()) break;
  }
  if (const char* env = std::getenv("KVASIR_MODEL_DIR"); env && fs::exists(fs::path(env) / "model.bin")) {
    return env;
  }
  fs::path c = ModelCacheDir() / "stories260K";
  if (fs::exists(c / "model.bin")) return c.string();
  return "";
}

// stories260K's weights and tokenizer, loaded for a test (gtest assertions on failure).
struct TestModel {
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<Tokenizer> tokenizer;
};
inline TestModel LoadStories260K() {
  TestModel m;
  const std::string dir = Stories260KDir();
  EXPECT_FALSE(dir.empty()) << "stories260K not found";
  if (dir.empty()) return m;
  auto w = LoadModelWeights(dir, LoadOptions{});
  EXPECT_TRUE(w.ok()) << w.status();
  if (w.ok()) m.weights = std::move(*w);
  auto t = LoadTokenizer(dir);
  EXPECT_TRUE(t.ok()) << t.status();
  if (t.ok()) m.tokenizer = std::move(*t);
  return m;
}

// A fixture holding stories260K's weights and tokenizer, loaded in SetUp (a derived SetUp calls
// this one first and returns on HasFatalFailure()).
class Stories260KTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TestModel m = LoadStories260K();
    ASSERT_TRUE(m.weights && m.tokenizer);
    weights_ = std::move(m.weights);
    tok_ = std::move(m.tokenizer);
  }
  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<Tokenizer> tok_;
};

// A fresh empty directory under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    namespace fs = std::filesystem;
    std::string tmpl = (fs::temp_directory_path() / "kvasir-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace kvasir::testing
