// Runs the real `kvasir` binary: generation, tokenization, conversion and every bad-input path
// (clear message on stderr, non-zero exit, never a signal).
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/testing_util.h"
#include "nlohmann/json.hpp"
#include "tests/integration/process.h"

namespace kvasir {
namespace {

using testing::BinaryPath;
using testing::ProcessResult;
using testing::RunProcess;

ProcessResult Kvasir(std::vector<std::string> args, const std::string& in = "",
                     const std::map<std::string, std::string>& env = {}) {
  args.insert(args.begin(), BinaryPath("kvasir"));
  ProcessResult r = RunProcess(args, in, env);
  EXPECT_EQ(r.signal, 0) << "kvasir died from signal " << r.signal << "\n" << r.err;
  return r;
}

void ExpectError(const ProcessResult& r, const std::string& needle) {
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.signal, 0);
  EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err;
  EXPECT_EQ(r.err.find("CHECK failed"), std::string::npos) << r.err;
}

std::string Stories() { return testing::Stories260KDir(); }

TEST(Cli, GreedyGenerateMatchesReferenceText) {
  auto r = Kvasir({"generate", "--model", Stories(), "--prompt", "Once upon a time",
                   "--max-tokens", "40", "--temperature", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Token ids of this continuation are checked against the numpy reference in model_test;
  // here the CLI must print exactly the continuation, no prompt, no logs.
  EXPECT_EQ(r.out.rfind(", there was a little girl named Lily. She loved to play outside", 0), 0u)
      << r.out;
  EXPECT_EQ(r.out.find("Once upon"), std::string::npos);
}

TEST(Cli, DefaultModelFromEnvironmentAndSeeds) {
  std::map<std::string, std::string> env = {{"KVASIR_MODEL_DIR", Stories()}};
  auto a = Kvasir({"generate", "--prompt", "Tom had a dog", "--max-tokens", "30", "--temperature",
                   "0.9", "--top-p", "0.95", "--seed", "11"}, "", env);
  auto b = Kvasir({"generate", "--prompt", "Tom had a dog", "--max-tokens", "30", "--temperature",
                   "0.9", "--top-p", "0.95", "--seed", "11"}, "", env);
  auto c = Kvasir({"generate", "--prompt", "Tom had a dog", "--max-tokens", "30", "--temperature",
                   "0.9", "--top-p", "0.95", "--seed", "12"}, "", env);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  EXPECT_GT(a.out.size(), 20u);
  auto bad = Kvasir({"generate", "--prompt", "x"}, "", {{"KVASIR_MODEL_DIR", "/nonexistent"}});
  ExpectError(bad, "KVASIR_MODEL_DIR");
}

TEST(Cli, ConvertedModelGeneratesIdenticalText) {
  testing::TempDir tmp;
  std::string hf = tmp.path() + "/hf";
  auto conv = Kvasir({"convert", "--from", Stories(), "--to", hf});
  ASSERT_EQ(conv.exit_code, 0) << conv.err;
  for (const char* f : {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_TRUE(std::filesystem::exists(hf + "/" + f)) << f;
  }
  std::vector<std::string> args = {"generate", "--prompt", "The cat sat on", "--max-tokens", "200",
                                   "--temperature", "0"};
  auto x = args, y = args;
  x.insert(x.end(), {"--model", Stories()});
  y.insert(y.end(), {"--model", hf});
  auto a = Kvasir(x), b = Kvasir(y);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
  // Both tokenizers give the same ids.
  std::string lines = "The cat sat on the mat.\n  two  spaces\n\xe4\xbd\xa0\xe5\xa5\xbd emoji \xf0\x9f\x98\x80\n";
  auto t1 = Kvasir({"tokenize", "--model", Stories()}, lines);
  auto t2 = Kvasir({"tokenize", "--model", hf}, lines);
  ASSERT_EQ(t1.exit_code, 0) << t1.err;
  EXPECT_EQ(t1.out, t2.out);
}

TEST(Cli, TokenizeOneLinePerLine) {
  auto r = Kvasir({"tokenize", "--model", Stories(), "--bos"}, "Once upon a time\n\nhi\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "1 403 407 261 378\n1\n1 270 417\n");
  auto nobos = Kvasir({"tokenize", "--tokenizer", Stories() + "/tokenizer.bin"}, "Once upon a time\n");
  EXPECT_EQ(nobos.out, "403 407 261 378\n");
  ExpectError(Kvasir({"tokenize", "--model", Stories()}, "ok\nbad \xff\xfe here\n"), "line 2");
}

TEST(Cli, BadInputIsAClearErrorNeverACrash) {
  const std::string m = Stories();
  ExpectError(Kvasir({"generate", "--model", m, "--prompt", "bad \xc3\x28 utf8"}), "UTF-8");
  std::string long_prompt;
  for (int i = 0; i < 400; ++i) long_prompt += "Lily and Tom ";
  ExpectError(Kvasir({"generate", "--model", m, "--prompt", long_prompt}), "context");
  ExpectError(Kvasir({"generate", "--model", m}), "--prompt");
  ExpectError(Kvasir({"generate", "--model", m, "--prompt", "x", "--max-tokens", "-1"}), "max-tokens");
  ExpectError(Kvasir({"generate", "--model", m, "--prompt", "x", "--max-tokens", "ten"}), "integer");
  ExpectError(Kvasir({"generate", "--model", m, "--prompt", "x", "--temperature", "nan"}), "finite");
  ExpectError(Kvasir({"generate", "--model", m, "--prompt", "x", "--temperature", "-1"}), "temperature");
  ExpectError(Kvasir({"generate", "--model", m, "--prompt", "x", "--top-p", "0"}), "top_p");
  ExpectError(Kvasir({"generate", "--model", m, "--prompt", "x", "--seed", "-4"}), "seed");
  ExpectError(Kvasir({"generate", "--model", m, "--prompt", "x", "--bogus", "1"}), "unknown flag");
  ExpectError(Kvasir({"generate", "--model", "/nonexistent/dir", "--prompt", "x"}), "not found");
  ExpectError(Kvasir({"frobnicate"}), "unknown command");
  ExpectError(Kvasir({"convert", "--from", m}), "--to");
  ExpectError(Kvasir({"convert", "--from", m, "--to", "/tmp/x", "--dtype", "int4"}), "dtype");

  // Corrupt and mismatched model files through the CLI.
  testing::TempDir tmp;
  std::ifstream in(m + "/model.bin", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::ofstream(tmp.path() + "/model.bin", std::ios::binary).write(bytes.data(), 5000);
  std::filesystem::copy_file(m + "/tokenizer.bin", tmp.path() + "/tokenizer.bin");
  ExpectError(Kvasir({"generate", "--model", tmp.path(), "--prompt", "x"}), "truncated");
  std::ofstream(tmp.path() + "/model.bin", std::ios::binary | std::ios::trunc)
      .write(bytes.data(), bytes.size());
  std::ofstream(tmp.path() + "/tokenizer.bin", std::ios::binary | std::ios::trunc).write("\x05\x00", 2);
  ExpectError(Kvasir({"generate", "--model", tmp.path(), "--prompt", "x"}), "tokenizer");
}

TEST(Cli, DummyWeightsAndLogits) {
  auto r = Kvasir({"logits", "--load-format", "dummy", "--dummy-config", "stories260K", "--ids",
                   "1,2,3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["logits"].size(), 3u);
  EXPECT_EQ(j["logits"][0].size(), 512u);
  auto again = Kvasir({"logits", "--load-format", "dummy", "--dummy-config", "stories260K",
                       "--ids", "1,2,3"});
  EXPECT_EQ(r.out, again.out);  // seeded
  ExpectError(Kvasir({"logits", "--load-format", "dummy", "--dummy-config", "nope", "--ids", "1"}),
              "unknown built-in");
  ExpectError(Kvasir({"logits", "--model", Stories(), "--ids", "1,9999"}), "vocabulary");
}

// `kvasir bench-offline` through the engine (CPU here; the H200 numbers are in kernels/NOTES.md)
// and the --device flag's errors on a machine without a GPU.
TEST(Cli, BenchOfflineAndDeviceFlags) {
  auto r = Kvasir({"bench-offline", "--load-format", "dummy", "--dummy-config", "stories260K",
                   "--num-prompts", "8", "--input-len", "20", "--output-len", "30",
                   "--max-num-seqs", "4", "--max-num-batched-tokens", "64", "--warmup", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const size_t row = r.out.find("| stories260K | cpu | 8 | 20 / 30 |");
  ASSERT_NE(row, std::string::npos) << r.out;
  const std::string line = r.out.substr(row, r.out.find('\n', row) - row);
  std::vector<std::string> cells;
  for (size_t a = 1, b; (b = line.find('|', a)) != std::string::npos; a = b + 1) {
    cells.push_back(line.substr(a + 1, b - a - 2));
  }
  ASSERT_EQ(cells.size(), 14u) << line;
  EXPECT_GT(std::stod(cells[6]), 0.0);   // output tok/s
  EXPECT_GT(std::stoll(cells[9]), 30);   // steps: at least one per output token
  EXPECT_EQ(cells[11], "0");             // failed requests
  ExpectError(Kvasir({"bench-offline", "--load-format", "dummy", "--dummy-config", "stories260K",
                      "--input-len", "400", "--output-len", "400"}),
              "exceeds the context");
  ExpectError(Kvasir({"bench-offline", "--num-prompts", "0"}), "positive");

  const std::string m = Stories();
  ExpectError(Kvasir({"generate", "--model", m, "--prompt", "x", "--device", "tpu"}),
              "--device must be cpu or cuda");
  ExpectError(Kvasir({"generate", "--model", m, "--prompt", "x", "--gpu-memory-utilization", "2"}),
              "gpu-memory-utilization");
  auto cuda = Kvasir({"generate", "--model", m, "--prompt", "x", "--device", "cuda",
                      "--max-tokens", "4"});
  if (cuda.exit_code != 0) {  // no GPU (CI): a clear error, not a crash
    EXPECT_NE(cuda.err.find("CUDA"), std::string::npos) << cuda.err;
  }
  // Dense layers on the GPU over host attention: without a device, a clear error at start.
  if (cuda.exit_code != 0) {
    ExpectError(Kvasir({"serve", "--model", m, "--device", "cuda", "--attention-shards", "2"}),
                "CUDA");
    ExpectError(Kvasir({"decoder", "--model", m, "--device", "cuda", "--router", "127.0.0.1:1",
                        "--insecure-cluster"}),
                "CUDA");
  }
}

}  // namespace
}  // namespace kvasir
