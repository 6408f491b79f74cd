#include "tools/bench/dataset.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace kvasir::bench {
namespace {

std::string TempFile(const std::string& name, const std::string& contents) {
  const auto path =
      std::filesystem::temp_directory_path() / (name + "." + std::to_string(::getpid()));
  std::ofstream(path) << contents;
  return path.string();
}

// A toy exact tokenizer: ids are letters 'a'..'z' (vocab 26), one token per letter, used to
// check the random dataset's exact-length path without the Kvasir tokenizer.
class LetterTokenizer : public TokenCounter {
 public:
  int Count(std::string_view text) const override {
    int n = 0;
    for (char c : text) n += (c >= 'a' && c <= 'z');
    return n;
  }
  bool exact() const override { return true; }
  std::string name() const override { return "letters"; }
  int vocab_size() const override { return 26; }
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (char c : text) {
      if (c >= 'a' && c <= 'z') ids.push_back(c - 'a');
    }
    return ids;
  }
  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids) s.push_back(static_cast<char>('a' + id));
    return s;
  }
};

TEST(RandomDatasetTest, LengthsFollowRangeRatio) {
  DatasetOptions o;
  o.num_prompts = 2000;
  o.random_input_len = 100;
  o.random_output_len = 20;
  o.random_range_ratio = 0.5;
  auto counter = MakeWordCounter();
  auto reqs = SampleRandom(o, *counter);
  ASSERT_TRUE(reqs.ok()) << reqs.status();
  int min_in = 1 << 30, max_in = 0, min_out = 1 << 30, max_out = 0;
  for (const auto& r : *reqs) {
    min_in = std::min(min_in, r.prompt_len);
    max_in = std::max(max_in, r.prompt_len);
    min_out = std::min(min_out, r.expected_output_len);
    max_out = std::max(max_out, r.expected_output_len);
    EXPECT_EQ(counter->Count(r.prompt), r.prompt_len);
  }
  // U[floor(100 * 0.5), ceil(100 * 1.5)] and U[10, 30]: 2000 draws reach both ends.
  EXPECT_EQ(min_in, 50);
  EXPECT_EQ(max_in, 150);
  EXPECT_EQ(min_out, 10);
  EXPECT_EQ(max_out, 30);
}

TEST(RandomDatasetTest, DeterministicPerSeed) {
  DatasetOptions o;
  o.num_prompts = 20;
  o.random_input_len = 30;
  o.random_range_ratio = 0.3;
  auto counter = MakeWordCounter();
  auto a = SampleRandom(o, *counter), b = SampleRandom(o, *counter);
  o.seed = 1;
  auto c = SampleRandom(o, *counter);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  bool differs = false;
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ((*a)[i].prompt, (*b)[i].prompt);
    differs |= (*a)[i].prompt != (*c)[i].prompt;
  }
  EXPECT_TRUE(differs);
}

TEST(RandomDatasetTest, ExactTokenizerGivesExactLengths) {
  DatasetOptions o;
  o.num_prompts = 50;
  o.random_input_len = 40;
  o.random_range_ratio = 0.25;
  o.random_prefix_len = 5;
  LetterTokenizer tok;
  auto reqs = SampleRandom(o, tok);
  ASSERT_TRUE(reqs.ok());
  for (const auto& r : *reqs) {
    EXPECT_EQ(tok.Count(r.prompt), r.prompt_len);
    EXPECT_GE(r.prompt_len, 5 + 30);
    EXPECT_LE(r.prompt_len, 5 + 50);
  }
  // The shared prefix is the same in every prompt.
  EXPECT_EQ((*reqs)[0].prompt.substr(0, 5), (*reqs)[1].prompt.substr(0, 5));
}

TEST(RandomDatasetTest, RejectsBadRangeRatio) {
  DatasetOptions o;
  o.random_range_ratio = 1.0;
  EXPECT_FALSE(SampleRandom(o, *MakeWordCounter()).ok());
}

TEST(ShareGptDatasetTest, FiltersAndOversamples) {
  const std::string path = TempFile("sharegpt.json", R"([
    {"conversations": [{"from": "human", "value": "one two three four five"},
                       {"from": "gpt", "value": "a b c d e f"}]},
    {"conversations": [{"from": "human", "value": "too short"},
                       {"from": "gpt", "value": "a b c d e f"}]},
    {"conversations": [{"from": "human", "value": "only one turn here at all"}]},
    {"conversations": [{"from": "human", "value": "w x y z q"},
                       {"from": "gpt", "value": "tiny"}]}
  ])");
  DatasetOptions o;
  o.name = "sharegpt";
  o.path = path;
  o.num_prompts = 3;
  auto reqs = SampleRequests(o, *MakeWordCounter());
  ASSERT_TRUE(reqs.ok()) << reqs.status();
  ASSERT_EQ(reqs->size(), 3u);
  for (const auto& r : *reqs) {
    EXPECT_EQ(r.prompt, "one two three four five");
    EXPECT_EQ(r.prompt_len, 5);
    EXPECT_EQ(r.expected_output_len, 6);
  }
  o.sharegpt_output_len = 9;  // fixed output length also admits the short completion
  reqs = SampleRequests(o, *MakeWordCounter());
  ASSERT_TRUE(reqs.ok());
  EXPECT_EQ((*reqs)[0].expected_output_len, 9);
  std::filesystem::remove(path);
}

TEST(CustomDatasetTest, ReadsJsonl) {
  const std::string path =
      TempFile("custom.jsonl", "{\"prompt\": \"hello there\"}\n\n{\"prompt\": \"x y z\"}\n");
  DatasetOptions o;
  o.name = "custom";
  o.path = path;
  o.num_prompts = 2;
  o.custom_output_len = 12;
  auto reqs = SampleRequests(o, *MakeWordCounter());
  ASSERT_TRUE(reqs.ok()) << reqs.status();
  EXPECT_EQ((*reqs)[1].prompt, "x y z");
  EXPECT_EQ((*reqs)[1].prompt_len, 3);
  EXPECT_EQ((*reqs)[1].expected_output_len, 12);
  std::filesystem::remove(path);
}

TEST(CustomDatasetTest, BadLineIsAnError) {
  const std::string path = TempFile("bad.jsonl", "{\"text\": 1}\n");
  DatasetOptions o;
  o.name = "custom";
  o.path = path;
  EXPECT_FALSE(SampleRequests(o, *MakeWordCounter()).ok());
  std::filesystem::remove(path);
}

TEST(SonnetLikeDatasetTest, SharedPrefixAndTargetLength) {
  DatasetOptions o;
  o.name = "sonnet-like";
  o.num_prompts = 10;
  o.sonnet_input_len = 300;
  o.sonnet_prefix_len = 100;
  auto counter = MakeWordCounter();
  auto reqs = SampleRequests(o, *counter);
  ASSERT_TRUE(reqs.ok()) << reqs.status();
  for (const auto& r : *reqs) {
    EXPECT_LE(r.prompt_len, 330);  // lines are drawn at random around the mean length
    EXPECT_GE(r.prompt_len, 250);
    EXPECT_EQ(r.expected_output_len, 150);
    EXPECT_EQ(r.prompt.rfind("Pick as many lines", 0), 0u);
  }
}

TEST(DatasetTest, UnknownNameIsAnError) {
  DatasetOptions o;
  o.name = "nope";
  EXPECT_FALSE(SampleRequests(o, *MakeWordCounter()).ok());
}

}  // namespace
}  // namespace kvasir::bench

namespace kvasir::bench {
namespace {

// With the real Kvasir tokenizer (stories260K, vocab 512), random prompts have exactly the
// sampled number of tokens, as vLLM's decode/re-encode/trim procedure guarantees.
TEST(RandomDatasetTest, KvasirTokenizerGivesExactLengths) {
  auto tok = LoadTokenCounter("../shared/models/stories260K");
  if (!tok.ok()) GTEST_SKIP() << tok.status();
  EXPECT_TRUE((*tok)->exact());
  EXPECT_EQ((*tok)->vocab_size(), 512);
  DatasetOptions o;
  o.num_prompts = 30;
  o.random_input_len = 64;
  o.random_range_ratio = 0.5;
  auto reqs = SampleRandom(o, **tok);
  ASSERT_TRUE(reqs.ok()) << reqs.status();
  const int special = (*tok)->num_special_tokens_to_add();
  int exact = 0;
  for (const auto& r : *reqs) {
    EXPECT_EQ((*tok)->Count(r.prompt), r.prompt_len);
    EXPECT_GE(r.prompt_len, (64 - special) / 2 - 2);
    EXPECT_LE(r.prompt_len, (64 - special) * 3 / 2 + 2);
    exact += r.prompt_len >= (64 - special) / 2 && r.prompt_len <= (64 - special) * 3 / 2 + 1;
  }
  EXPECT_EQ(exact, 30);
}

}  // namespace
}  // namespace kvasir::bench
