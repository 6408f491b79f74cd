// Unit tests: UTF-8 helpers, llama2.c and HF loading (including corrupt and malformed files),
// small hand-written HF pipelines, incremental decoding. The corpus comparisons against the
// reference encoders live in tokenizer_reference_test.cc.
#include "model/tokenizer/tokenizer.h"

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "common/mapped_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/tokenizer/hf_tokenizer.h"
#include "model/tokenizer/internal/byte_level.h"
#include "model/tokenizer/internal/utf8.h"
#include "model/tokenizer/llama2c_tokenizer.h"

namespace kvasir {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using tokenizer_internal::FirstInvalidUtf8;
using tokenizer_internal::SanitizeUtf8;

constexpr char kStoriesDir[] = "../shared/models/stories260K";
constexpr char kStoriesTokenizer[] = "../shared/models/stories260K/tokenizer.bin";
constexpr char kFffd[] = "\xEF\xBF\xBD";

std::unique_ptr<Llama2cTokenizer> LoadStories() {
  auto tok = Llama2cTokenizer::FromFile(kStoriesTokenizer);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

std::string Stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special,
                   std::vector<std::string>* chunks = nullptr) {
  IncrementalDecoder dec(tok, skip_special);
  std::string out;
  for (const int32_t id : ids) {
    std::string piece = dec.Push(id);
    EXPECT_EQ(FirstInvalidUtf8(piece), piece.size()) << "invalid UTF-8 emitted";
    if (chunks != nullptr) chunks->push_back(piece);
    out += piece;
  }
  std::string rest = dec.Flush();
  if (chunks != nullptr) chunks->push_back(rest);
  return out + rest;
}

// ---------------------------------------------------------------------------------------------
// UTF-8 helpers.

TEST(Utf8Test, SanitizeReplacesMaximalSubparts) {
  EXPECT_EQ(SanitizeUtf8("abc"), "abc");
  EXPECT_EQ(SanitizeUtf8("\xC3\xA9"), "\xC3\xA9");
  EXPECT_EQ(SanitizeUtf8("\xFF"), kFffd);
  EXPECT_EQ(SanitizeUtf8("a\xE2\x82"), std::string("a") + kFffd);  // truncated €: one U+FFFD
  EXPECT_EQ(SanitizeUtf8("\xE2\x82x"), std::string(kFffd) + "x");
  EXPECT_EQ(SanitizeUtf8("\xC0\xAF"), std::string(kFffd) + kFffd);              // overlong
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), std::string(kFffd) + kFffd + kFffd);  // surrogate
  EXPECT_EQ(SanitizeUtf8("\xF4\x90\x80\x80"), std::string(kFffd) + kFffd + kFffd + kFffd);
  EXPECT_EQ(FirstInvalidUtf8("ok\xF0\x9F\x98"), 2u);
}

TEST(Utf8Test, ByteLevelMappingRoundTrips) {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::string spelled = tokenizer_internal::BytesToByteLevel(all);
  std::string back;
  ASSERT_TRUE(tokenizer_internal::ByteLevelToBytes(spelled, &back));
  EXPECT_EQ(back, all);
  EXPECT_EQ(tokenizer_internal::BytesToByteLevel(" \n"), "\xC4\xA0\xC4\x8A");  // "ĠĊ"
  EXPECT_FALSE(tokenizer_internal::ByteLevelToBytes("\xE2\x96\x81", &back));   // ▁ is not mapped
}

// ---------------------------------------------------------------------------------------------
// llama2.c tokenizer.bin.

TEST(Llama2cTokenizerTest, LoadsStories260K) {
  auto tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->max_token_length(), 7);
  EXPECT_EQ(tok->IdToPiece(3), "<0x00>");
  EXPECT_EQ(tok->IdToPiece(512), "");
  EXPECT_TRUE(tok->IsSpecial(1));
  EXPECT_TRUE(tok->IsSpecial(2));
  EXPECT_FALSE(tok->IsSpecial(0));
  EXPECT_FALSE(tok->IsSpecial(300));
  EXPECT_EQ(tok->kind(), "llama2.c");
}

TEST(Llama2cTokenizerTest, EncodesLikeLlama2c) {
  auto tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  // Empty text: no dummy prefix.
  EXPECT_THAT(*tok->Encode("", true), ElementsAre(1));
  EXPECT_TRUE(tok->Encode("", false)->empty());
  // Known ids (same as run.c and tests/reference/llama2c_reference.py).
  EXPECT_THAT(*tok->Encode("Once upon a time", true), ElementsAre(1, 403, 407, 261, 378));
  // A character that is not in the vocab falls back to its bytes (+3).
  EXPECT_THAT(*tok->Encode("\xF0\x9F\x98\x80", false),
              ElementsAre(410, 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3));
  EXPECT_EQ(tok->Decode(*tok->Encode("Once upon a time", true)), "Once upon a time");
  EXPECT_EQ(tok->Decode({1, 403}, /*skip_special=*/false), "\n<s>\nOnce");
}

TEST(Llama2cTokenizerTest, RejectsInvalidUtf8) {
  auto tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  for (const std::string& bad : {std::string("abc\xFF"), std::string("\xC3"),
                                 std::string("x\xED\xA0\x80y"), std::string("\xC0\xAF")}) {
    auto ids = tok->Encode(bad, true);
    ASSERT_FALSE(ids.ok());
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(ids.status().message(), HasSubstr("not valid UTF-8"));
  }
}

TEST(Llama2cTokenizerTest, CorruptFilesAreErrors) {
  auto data = ReadFileToString(kStoriesTokenizer);
  ASSERT_TRUE(data.ok());
  // Every truncation either loads a prefix of whole tokens or fails cleanly.
  for (size_t n = 0; n < data->size(); ++n) {
    auto tok = Llama2cTokenizer::FromBytes(std::string_view(*data).substr(0, n));
    if (tok.ok()) {
      EXPECT_GE((*tok)->vocab_size(), 3);
      ASSERT_TRUE((*tok)->Encode("Hi there \xF0\x9F\x98\x80", true).ok());
    } else {
      EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(tok.status().message(), HasSubstr("llama2.c tokenizer"));
    }
  }
  EXPECT_THAT(Llama2cTokenizer::FromBytes("").status().message(), HasSubstr("header"));
  std::string bad = *data;
  const int32_t huge = 1 << 30;
  std::memcpy(bad.data() + 4 + 4, &huge, 4);  // length of token 0
  EXPECT_THAT(Llama2cTokenizer::FromBytes(bad).status().message(), HasSubstr("bad length"));
  const int32_t negative = -5;
  std::memcpy(bad.data(), &negative, 4);
  EXPECT_THAT(Llama2cTokenizer::FromBytes(bad).status().message(), HasSubstr("max_token_length"));
  EXPECT_FALSE(LoadTokenizerFile("/nonexistent/tokenizer.bin").ok());
}

TEST(Llama2cTokenizerTest, RandomMutationsNeverCrash) {
  auto data = ReadFileToString(kStoriesTokenizer);
  ASSERT_TRUE(data.ok());
  std::mt19937 rng(1234);
  int loaded = 0;
  for (int iter = 0; iter < 300; ++iter) {
    std::string m = *data;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < flips; ++k) m[rng() % m.size()] = static_cast<char>(rng());
    auto tok = Llama2cTokenizer::FromBytes(m);
    if (!tok.ok()) continue;
    ++loaded;
    auto ids = (*tok)->Encode("Once upon a time, \xC3\xA9t\xC3\xA9 \xF0\x9F\x98\x80!", true);
    ASSERT_TRUE(ids.ok());
    (void)(*tok)->Decode(*ids);
    (void)Stream(**tok, {1, 5, 300, 511, 9999, -1}, true);
  }
  EXPECT_GT(loaded, 0);
}

// ---------------------------------------------------------------------------------------------
// Loading by directory / file name.

TEST(LoadTokenizerTest, DetectsFormat) {
  auto tok = LoadTokenizer(kStoriesDir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->kind(), "llama2.c");
  auto missing = LoadTokenizer("/nonexistent-model-dir");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("tokenizer.json or tokenizer.bin"));
}

TEST(LoadTokenizerTest, ExportedJsonLoadsThroughFileLoader) {
  auto tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  auto json = ExportHfTokenizerJson(*tok);
  ASSERT_TRUE(json.ok()) << json.status();
  const std::string dir = ::testing::TempDir() + "/kvasir_tok_export";
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(WriteStringToFile(dir + "/tokenizer.json", *json).ok());
  ASSERT_TRUE(
      WriteStringToFile(dir + "/tokenizer_config.json", *ExportHfTokenizerConfigJson(*tok)).ok());
  auto hf = LoadTokenizer(dir);
  ASSERT_TRUE(hf.ok()) << hf.status();
  EXPECT_EQ((*hf)->kind(), "hf-bpe");
  EXPECT_EQ(*(*hf)->Encode("Once upon a time", true), *tok->Encode("Once upon a time", true));
  // Only llama2.c tokenizers can be exported.
  auto again = ExportHfTokenizerJson(**hf);
  ASSERT_FALSE(again.ok());
  EXPECT_THAT(again.status().message(), HasSubstr("llama2.c"));
}

// ---------------------------------------------------------------------------------------------
// HF tokenizer.json: small hand-written pipelines.

// Byte-level BPE over "a", "b", "c", "Ġ" (space) with ranked merges.
constexpr char kByteLevelJson[] = R"({
  "added_tokens": [{"id": 9, "content": "<|eot|>", "special": true},
                   {"id": 10, "content": "<x>", "special": false, "lstrip": true}],
  "normalizer": null,
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "\\s+|\\S+"}, "behavior": "Isolated", "invert": false},
    {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}]},
  "post_processor": {"type": "ByteLevel"},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "ignore_merges": IGNORE,
            "vocab": {"a": 0, "b": 1, "c": 2, "\u0120": 3, "ab": 4, "abc": 5, "\u0120a": 6,
                      "\u0120ab": 7, "ca": 8},
            "merges": [["a", "b"], "ab c", ["\u0120", "a"], "c a"]}
})";

std::unique_ptr<HfTokenizer> ByteLevelTokenizer(bool ignore_merges) {
  std::string json = kByteLevelJson;
  json.replace(json.find("IGNORE"), 6, ignore_merges ? "true" : "false");
  auto tok = HfTokenizer::FromJson(json);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

TEST(HfTokenizerTest, ByteLevelMergesByRank) {
  auto tok = ByteLevelTokenizer(false);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->kind(), "hf-bpe-bytelevel");
  EXPECT_EQ(tok->vocab_size(), 11);
  EXPECT_EQ(tok->bos_id(), -1);
  // "abc" -> ab c -> abc; " ab": a b (rank 0) beats Ġ a (rank 2), and "Ġ ab" is no merge.
  EXPECT_THAT(*tok->Encode("abc ab", false), ElementsAre(5, 3, 4));
  // Leftmost wins among equal ranks; "c a" (rank 3) loses to "a b" (rank 0): c|ab.
  EXPECT_THAT(*tok->Encode("cab", false), ElementsAre(2, 4));
  // Bytes without a token are dropped (no unk_token); what remains still merges.
  EXPECT_THAT(*tok->Encode("azb", false), ElementsAre(4));
  EXPECT_EQ(tok->Decode({5, 3, 4}), "abc ab");
  EXPECT_EQ(tok->IdToPiece(3), "\xC4\xA0");
}

TEST(HfTokenizerTest, IgnoreMergesTakesWholeWordFromVocab) {
  auto tok = ByteLevelTokenizer(true);
  ASSERT_NE(tok, nullptr);
  // The split gives "abc", " ", "ab": with ignore_merges " ab" would be Ġab if it were one word.
  EXPECT_THAT(*tok->Encode("abc ab", false), ElementsAre(5, 3, 4));
  auto no_split = std::string(kByteLevelJson);
  no_split.replace(no_split.find("IGNORE"), 6, "true");
  no_split.replace(no_split.find("\\\\s+|\\\\S+"), 9, " ?\\\\S+");
  auto t2 = HfTokenizer::FromJson(no_split);
  ASSERT_TRUE(t2.ok()) << t2.status();
  EXPECT_THAT(*(*t2)->Encode("abc ab", false), ElementsAre(5, 7));
}

TEST(HfTokenizerTest, AddedTokensAreSplitOutFirst) {
  auto tok = ByteLevelTokenizer(false);
  ASSERT_NE(tok, nullptr);
  EXPECT_THAT(*tok->Encode("ab<|eot|>c", false), ElementsAre(4, 9, 2));
  // lstrip removes the whitespace before a non-special added token.
  EXPECT_THAT(*tok->Encode("ab  <x>c", false), ElementsAre(4, 10, 2));
  EXPECT_TRUE(tok->IsSpecial(9));
  EXPECT_FALSE(tok->IsSpecial(10));
  EXPECT_EQ(tok->Decode({4, 9, 2}), "abc");
  EXPECT_EQ(tok->Decode({4, 9, 2}, false), "ab<|eot|>c");
  EXPECT_EQ(tok->Decode({4, 10, 2}), "ab<x>c");
}

// SentencePiece style with a Metaspace pre-tokenizer and decoder, byte_fallback and <unk>.
constexpr char kMetaspaceJson[] = R"({
  "added_tokens": [{"id": 0, "content": "<unk>", "special": true},
                   {"id": 1, "content": "<s>", "special": true},
                   {"id": 2, "content": "</s>", "special": true}],
  "normalizer": null,
  "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first",
                    "split": true},
  "post_processor": {"type": "TemplateProcessing",
                     "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                {"Sequence": {"id": "A", "type_id": 0}}]},
  "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"},
              {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first"}]},
  "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true,
            "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0xC3>": 3, "<0xA9>": 4,
                      "\u2581": 5, "a": 6, "b": 7, "\u2581a": 8, "\u2581b": 9},
            "merges": ["\u2581 a", "\u2581 b"]}
})";

TEST(HfTokenizerTest, MetaspaceByteFallbackAndUnk) {
  auto tok = HfTokenizer::FromJson(kMetaspaceJson);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const HfTokenizer& t = **tok;
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_THAT(*t.Encode("a b", true), ElementsAre(1, 8, 9));
  // é is not in the vocab: its bytes; "x" has no byte tokens: <unk>, fused with the next one.
  EXPECT_THAT(*t.Encode("a\xC3\xA9", false), ElementsAre(8, 3, 4));
  EXPECT_THAT(*t.Encode("axy", false), ElementsAre(8, 0));
  // prepend_scheme "first": only the first section gets the ▁.
  EXPECT_THAT(*t.Encode("a</s>a", false), ElementsAre(8, 2, 6));
  EXPECT_EQ(t.Decode({1, 8, 9, 3, 4}), "a b\xC3\xA9");
  EXPECT_EQ(t.Decode({8, 3}), std::string("a") + kFffd);
}

TEST(HfTokenizerTest, RejectsInvalidUtf8) {
  auto tok = ByteLevelTokenizer(false);
  ASSERT_NE(tok, nullptr);
  auto ids = tok->Encode("ab\xF0\x9F", false);
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ids.status().message(), HasSubstr("not valid UTF-8"));
  EXPECT_THAT(ids.status().message(), HasSubstr("offset 2"));
}

struct MalformedCase {
  const char* json;
  const char* message;
};

TEST(HfTokenizerTest, MalformedJsonIsAnError) {
  const MalformedCase cases[] = {
      {"", "not valid JSON"},
      {"{\"model\": ", "not valid JSON"},
      {"[1, 2]", "not a JSON object"},
      {"{}", "no 'model'"},
      {R"({"model": {"type": "WordPiece", "vocab": {"a": 0}}})", "unsupported model type"},
      {R"({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}})", "unsupported model type"},
      {R"({"model": {"vocab": {"a": 0}}})", "unsupported model type"},
      {R"({"model": {"type": "BPE", "merges": []}})", "no 'vocab'"},
      {R"({"model": {"type": "BPE", "vocab": {}}})", "vocab is empty"},
      {R"({"model": {"type": "BPE", "vocab": {"a": "zero"}}})", "non-integer id"},
      {R"({"model": {"type": "BPE", "vocab": {"a": -1}}})", "out-of-range id"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 99999999999}}})", "out-of-range id"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}}})", "used twice"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0, "ab": 1}, "merges": ["a b"]}})",
       "references token 'b'"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}})",
       "references token 'ab'"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["ab"]}})", "not two tokens"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a"]]}})", "neither"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": {"a": 1}}})", "not an array"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "added_tokens": {}})", "not an array"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "added_tokens": [{"id": 1}]})",
       "added_tokens entry"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "added_tokens": [{"id": 0,
          "content": "b"}]})",
       "reuses id"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}},
          "pre_tokenizer": {"type": "Whitespace"}})",
       "unsupported pre_tokenizer type"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}},
          "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"}}})",
       "bad regex"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "normalizer": {"type": "NFKC"}})",
       "unsupported normalizer type"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "decoder": {"type": "WordPiece"}})",
       "unsupported decoder type"},
      {R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "normalizer": 5})",
       "unsupported normalizer type"},
  };
  for (const MalformedCase& c : cases) {
    auto tok = HfTokenizer::FromJson(c.json);
    ASSERT_FALSE(tok.ok()) << c.json;
    EXPECT_THAT(tok.status().message(), HasSubstr(c.message)) << c.json;
  }
  auto config = HfTokenizer::FromJson(R"({"model": {"type": "BPE", "vocab": {"a": 0}}})", "[");
  EXPECT_THAT(config.status().message(), HasSubstr("tokenizer_config.json"));
}

TEST(HfTokenizerTest, FileErrorsNameTheFile) {
  const std::string path = ::testing::TempDir() + "/kvasir_bad_tokenizer.json";
  ASSERT_TRUE(WriteStringToFile(path, "{\"model\": {\"type\": \"BPE\"}}").ok());
  auto tok = LoadTokenizerFile(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(tok.status().message(), HasSubstr(path));
  EXPECT_THAT(tok.status().message(), HasSubstr("vocab"));
  EXPECT_FALSE(LoadTokenizerFile("/nonexistent/tokenizer.json").ok());
}

TEST(HfTokenizerTest, RandomMutationsNeverCrash) {
  auto stories = LoadStories();
  ASSERT_NE(stories, nullptr);
  auto json = ExportHfTokenizerJson(*stories);
  ASSERT_TRUE(json.ok());
  std::mt19937 rng(99);
  int loaded = 0;
  for (int iter = 0; iter < 200; ++iter) {
    std::string m = *json;
    if (iter % 4 == 0) {
      m.resize(rng() % m.size());
    } else {
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < flips; ++k) m[rng() % m.size()] = "{}[]\",:0a \\"[rng() % 11];
    }
    auto tok = HfTokenizer::FromJson(m);
    if (!tok.ok()) continue;
    ++loaded;
    auto ids = (*tok)->Encode("Once upon a time \xF0\x9F\x98\x80 <s>", true);
    ASSERT_TRUE(ids.ok());
    (void)(*tok)->Decode(*ids);
  }
  EXPECT_GT(loaded, 0);
}

// ---------------------------------------------------------------------------------------------
// Incremental decoding.

TEST(IncrementalDecoderTest, HoldsBackSplitEmoji) {
  auto tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  auto ids = tok->Encode("hi \xF0\x9F\x98\x80!", true);  // the emoji is 4 byte-fallback tokens
  ASSERT_TRUE(ids.ok());
  std::vector<std::string> chunks;
  const std::string text = Stream(*tok, *ids, true, &chunks);
  EXPECT_EQ(text, "hi \xF0\x9F\x98\x80!");
  EXPECT_EQ(text, tok->Decode(*ids));
  // Exactly one chunk carries the whole emoji; the three before it are empty.
  int with_emoji = 0;
  for (const std::string& c : chunks) with_emoji += c.find("\xF0\x9F\x98\x80") != std::string::npos;
  EXPECT_EQ(with_emoji, 1);
  const std::vector<int32_t> emoji = {0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3};
  IncrementalDecoder dec(*tok);
  EXPECT_EQ(dec.Push(emoji[0]), "");
  EXPECT_EQ(dec.Push(emoji[1]), "");
  EXPECT_EQ(dec.Push(emoji[2]), "");
  EXPECT_EQ(dec.Push(emoji[3]), "\xF0\x9F\x98\x80");
  EXPECT_EQ(dec.Flush(), "");
}

TEST(IncrementalDecoderTest, IncompleteAndInvalidBytesBecomeReplacementChars) {
  auto tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  // A cut-off emoji: held back, then one U+FFFD at Flush, as in Decode.
  const std::vector<int32_t> cut = {0xF0 + 3, 0x9F + 3};
  EXPECT_EQ(Stream(*tok, cut, true), kFffd);
  EXPECT_EQ(tok->Decode(cut), kFffd);
  // A byte that can never start a character is replaced at once.
  IncrementalDecoder dec(*tok);
  EXPECT_EQ(dec.Push(0xFF + 3), kFffd);
  // An incomplete sequence followed by ASCII: U+FFFD, then the ASCII.
  const std::vector<int32_t> broken = {0xE2 + 3, 0x82 + 3, 'x' + 3};
  EXPECT_EQ(Stream(*tok, broken, true), std::string(kFffd) + "x");
  EXPECT_EQ(tok->Decode(broken), std::string(kFffd) + "x");
  // Out-of-range ids contribute nothing.
  EXPECT_EQ(Stream(*tok, {-7, 100000, 403}, true), "Once");
}

TEST(IncrementalDecoderTest, SpecialTokensAndLeadingSpace) {
  auto tok = LoadStories();
  ASSERT_NE(tok, nullptr);
  auto ids = tok->Encode("Once upon", true);
  ASSERT_TRUE(ids.ok());
  std::vector<int32_t> with_eos = *ids;
  with_eos.push_back(2);
  EXPECT_EQ(Stream(*tok, with_eos, true), "Once upon");
  EXPECT_EQ(Stream(*tok, with_eos, false), "\n<s>\nOnce upon\n</s>\n");
  EXPECT_EQ(Stream(*tok, with_eos, false), tok->Decode(with_eos, false));
  // After BOS llama2.c strips the leading space, also mid-stream.
  EXPECT_EQ(Stream(*tok, {403, 1, 407}, true), "Onceupon");
}

}  // namespace
}  // namespace kvasir
