// Corrupt, truncated and mismatched model files give clear errors, never a crash.
#include <cstring>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "model/safetensors.h"
#include "model/testing_util.h"
#include "model/weights.h"

namespace kvasir {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), data.size());
}

std::string ErrorOf(const std::string& dir) {
  auto w = LoadModelWeights(dir, LoadOptions{});
  EXPECT_FALSE(w.ok()) << "loading " << dir << " should fail";
  return w.ok() ? "" : std::string(w.status().message());
}

class CorruptFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = testing::Stories260KDir();
    ASSERT_FALSE(src_.empty());
    model_ = ReadAll(src_ + "/model.bin");
    ASSERT_EQ(model_.size(), 1056540u);
  }
  std::string Llama2cDir(const std::string& bytes) {
    WriteAll(tmp_.path() + "/model.bin", bytes);
    return tmp_.path();
  }
  // An HF directory converted from stories260K; returns its path.
  std::string HfDir() {
    auto w = LoadModelWeights(src_, LoadOptions{});
    EXPECT_TRUE(w.ok());
    EXPECT_TRUE(WriteHfModel(**w, tmp_.path(), DType::kF32).ok());
    return tmp_.path();
  }
  std::string src_, model_;
  testing::TempDir tmp_;
};

TEST_F(CorruptFiles, TruncatedLlama2c) {
  EXPECT_NE(ErrorOf(Llama2cDir(model_.substr(0, 1000))).find("truncated"), std::string::npos);
  EXPECT_NE(ErrorOf(Llama2cDir(model_.substr(0, 10))).find("header"), std::string::npos);
  EXPECT_NE(ErrorOf(Llama2cDir("")).find("header"), std::string::npos);
}

TEST_F(CorruptFiles, GarbageLlama2cHeader) {
  std::string bad = model_;
  int32_t neg = -64;
  std::memcpy(bad.data(), &neg, 4);  // dim
  EXPECT_NE(ErrorOf(Llama2cDir(bad)).find("positive"), std::string::npos);
  bad = model_;
  int32_t heads = 3;
  std::memcpy(bad.data() + 12, &heads, 4);  // n_heads 3, n_kv_heads 4
  EXPECT_NE(ErrorOf(Llama2cDir(bad)).find("corrupt"), std::string::npos);
  bad = model_;
  int32_t huge = 1 << 30;
  std::memcpy(bad.data() + 4, &huge, 4);  // hidden_dim
  EXPECT_NE(ErrorOf(Llama2cDir(bad)).find("corrupt"), std::string::npos);
}

TEST_F(CorruptFiles, MissingDirectoryAndFiles) {
  EXPECT_NE(ErrorOf(tmp_.path() + "/nope").find("not found"), std::string::npos);
  EXPECT_NE(ErrorOf(tmp_.path()).find("no model"), std::string::npos);
  WriteAll(tmp_.path() + "/config.json", "{}");
  EXPECT_NE(ErrorOf(tmp_.path()).find("missing"), std::string::npos);
  WriteAll(tmp_.path() + "/config.json", "{not json");
  EXPECT_NE(ErrorOf(tmp_.path()).find("JSON"), std::string::npos);
}

TEST_F(CorruptFiles, TruncatedSafetensors) {
  std::string dir = HfDir();
  std::string st = ReadAll(dir + "/model.safetensors");
  WriteAll(dir + "/model.safetensors", st.substr(0, st.size() - 100));
  EXPECT_NE(ErrorOf(dir).find("outside the file"), std::string::npos);
  WriteAll(dir + "/model.safetensors", st.substr(0, 5));
  EXPECT_NE(ErrorOf(dir).find("corrupt"), std::string::npos);
  std::string bad = st;
  bad[0] = '\xff';
  bad[5] = '\x7f';  // absurd header length
  WriteAll(dir + "/model.safetensors", bad);
  EXPECT_NE(ErrorOf(dir).find("header length"), std::string::npos);
  bad = st;
  bad[10] = '#';  // breaks the JSON header
  WriteAll(dir + "/model.safetensors", bad);
  EXPECT_NE(ErrorOf(dir).find("corrupt"), std::string::npos);
}

TEST_F(CorruptFiles, UnknownDtypeAndMismatchedShapes) {
  std::string dir = HfDir();
  std::string st = ReadAll(dir + "/model.safetensors");
  std::string bad = st;
  size_t pos = bad.find("\"F32\"");
  ASSERT_NE(pos, std::string::npos);
  bad.replace(pos, 5, "\"I32\"");
  WriteAll(dir + "/model.safetensors", bad);
  EXPECT_NE(ErrorOf(dir).find("unsupported dtype"), std::string::npos);
  WriteAll(dir + "/model.safetensors", st);
  // A config that does not match the tensors.
  std::string cfg = ReadAll(dir + "/config.json");
  std::string wrong = cfg;
  pos = wrong.find("\"intermediate_size\": 172");
  ASSERT_NE(pos, std::string::npos) << cfg;
  wrong.replace(pos, 24, "\"intermediate_size\": 180");
  WriteAll(dir + "/config.json", wrong);
  std::string err = ErrorOf(dir);
  EXPECT_NE(err.find("shape"), std::string::npos) << err;
  EXPECT_NE(err.find("config.json"), std::string::npos) << err;
  wrong = cfg;
  pos = wrong.find("\"num_key_value_heads\": 4");
  wrong.replace(pos, 24, "\"num_key_value_heads\": 3");
  WriteAll(dir + "/config.json", wrong);
  EXPECT_NE(ErrorOf(dir).find("multiple"), std::string::npos);
  wrong = cfg;
  pos = wrong.find("\"model_type\": \"llama\"");
  wrong.replace(pos, 21, "\"model_type\": \"gpt2\" ");
  WriteAll(dir + "/config.json", wrong);
  EXPECT_NE(ErrorOf(dir).find("model_type"), std::string::npos);
}

TEST_F(CorruptFiles, ShardedIndex) {
  std::string dir = HfDir();
  fs::rename(dir + "/model.safetensors", dir + "/model-00001-of-00001.safetensors");
  auto st = SafetensorsFile::Open(dir + "/model-00001-of-00001.safetensors");
  ASSERT_TRUE(st.ok());
  std::string index = "{\"metadata\": {}, \"weight_map\": {";
  bool first = true;
  for (const auto& [name, t] : (*st)->tensors()) {
    index += (first ? "\"" : ", \"") + name + "\": \"model-00001-of-00001.safetensors\"";
    first = false;
  }
  index += "}}";
  WriteAll(dir + "/model.safetensors.index.json", index);
  auto ok = LoadModelWeights(dir, LoadOptions{});
  EXPECT_TRUE(ok.ok()) << ok.status();
  WriteAll(dir + "/model.safetensors.index.json",
           "{\"weight_map\": {\"a\": \"model-00002-of-00002.safetensors\"}}");
  EXPECT_NE(ErrorOf(dir).find("cannot open"), std::string::npos);
  WriteAll(dir + "/model.safetensors.index.json", "{\"weight_map\": {\"a\": \"../../etc/passwd\"}}");
  EXPECT_NE(ErrorOf(dir).find("outside"), std::string::npos);
  WriteAll(dir + "/model.safetensors.index.json", "[1, 2]");
  EXPECT_NE(ErrorOf(dir).find("weight_map"), std::string::npos);
}

TEST_F(CorruptFiles, MissingTensor) {
  std::string dir = HfDir();
  std::string st = ReadAll(dir + "/model.safetensors");
  size_t pos = st.find("model.norm.weight");
  ASSERT_NE(pos, std::string::npos);
  st.replace(pos, 17, "model.xxxx.weight");
  WriteAll(dir + "/model.safetensors", st);
  EXPECT_NE(ErrorOf(dir).find("model.norm.weight is missing"), std::string::npos);
}

TEST(Safetensors, WriteReadRoundTripAllDtypes) {
  testing::TempDir tmp;
  std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, 65504.0f, -1e-3f};
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    std::string path = tmp.path() + "/t.safetensors";
    ASSERT_TRUE(WriteSafetensors(path, {{"x", {2, 3}, a.data()}}, dt).ok());
    auto f = SafetensorsFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    const TensorView* t = (*f)->Find("x");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->dtype, dt);
    EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3}));
    std::vector<float> back(6);
    ConvertToF32(t->dtype, t->data, back.data(), 6);
    for (int i = 0; i < 6; ++i) EXPECT_NEAR(back[i], a[i], std::fabs(a[i]) * 8e-3 + 1e-6);
  }
}

}  // namespace
}  // namespace kvasir
