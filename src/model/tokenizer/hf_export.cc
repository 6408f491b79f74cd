// ExportHfTokenizerJson / ExportHfTokenizerConfigJson: a llama2.c tokenizer as an HF
// tokenizer.json (SentencePiece-style BPE with byte_fallback).
#include <algorithm>
#include <tuple>

#include "model/tokenizer/internal/utf8.h"
#include "model/tokenizer/llama2c_tokenizer.h"
#include "model/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace kvasir {
namespace {

using json = nlohmann::ordered_json;
constexpr char kMetaspace[] = "\xE2\x96\x81";  // U+2581 ▁

absl::StatusOr<const Llama2cTokenizer*> AsLlama2c(const Tokenizer& tokenizer) {
  const auto* tok = dynamic_cast<const Llama2cTokenizer*>(&tokenizer);
  if (tok == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("HF export needs a llama2.c tokenizer, got '", tokenizer.kind(), "'"));
  }
  return tok;
}

// llama2.c pieces spell the space ' '; SentencePiece-style HF vocabularies spell it '▁'.
std::string ToHfPiece(std::string piece) {
  std::string out;
  for (const char c : piece) {
    if (c == ' ') {
      out += kMetaspace;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> ExportHfTokenizerJson(const Tokenizer& tokenizer) {
  ASSIGN_OR_RETURN(const Llama2cTokenizer* tok, AsLlama2c(tokenizer));
  const int32_t n = tok->vocab_size();
  std::vector<std::string> pieces(n);
  json vocab = json::object();
  for (int32_t id = 0; id < n; ++id) {
    const std::string raw = tok->IdToPiece(id);
    if (tokenizer_internal::FirstInvalidUtf8(raw) != raw.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("HF export: piece of token ", id, " is not valid UTF-8"));
    }
    if (raw.find(kMetaspace) != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("HF export: piece of token ", id, " already contains U+2581"));
    }
    pieces[id] = ToHfPiece(raw);
    if (vocab.contains(pieces[id])) {
      return absl::InvalidArgumentError(absl::StrCat("HF export: duplicate piece for token ", id));
    }
    vocab[pieces[id]] = id;
  }

  // llama2.c merges whichever adjacent pair concatenates to the best-scoring vocab entry. As BPE
  // merges: every split of a (non-special) token into two vocab entries, ranked by the token's
  // score (best first), ties by id, then by split position.
  std::unordered_map<std::string, int32_t> lookup;
  for (int32_t id = 0; id < n; ++id) lookup.emplace(pieces[id], id);
  std::vector<std::tuple<float, int32_t, size_t, int32_t, int32_t>> merges;
  for (int32_t id = 0; id < n; ++id) {
    if (tok->IsSpecial(id)) continue;
    const std::string& p = pieces[id];
    size_t pos = 0;
    while (pos < p.size()) {
      pos += tokenizer_internal::NextUtf8(p, pos).length;
      if (pos >= p.size()) break;
      auto a = lookup.find(p.substr(0, pos));
      auto b = lookup.find(p.substr(pos));
      if (a == lookup.end() || b == lookup.end()) continue;
      if (tok->IsSpecial(a->second) || tok->IsSpecial(b->second)) continue;
      merges.emplace_back(-tok->score(id), id, pos, a->second, b->second);
    }
  }
  std::sort(merges.begin(), merges.end());
  json merge_list = json::array();
  for (const auto& m : merges) {
    merge_list.push_back(json::array({pieces[std::get<3>(m)], pieces[std::get<4>(m)]}));
  }

  json added = json::array();
  for (int32_t id = 0; id < n; ++id) {
    if (!tok->IsSpecial(id)) continue;
    added.push_back({{"id", id},
                     {"content", pieces[id]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }

  json root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  root["added_tokens"] = added;
  root["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       json::array(
           {{{"type", "Prepend"}, {"prepend", kMetaspace}},
            {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kMetaspace}}})}};
  root["pre_tokenizer"] = nullptr;
  const std::string bos = pieces[Llama2cTokenizer::kBos];
  root["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"pair", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                            {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                            {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
                            {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
      {"special_tokens",
       {{bos,
         {{"id", bos},
          {"ids", json::array({Llama2cTokenizer::kBos})},
          {"tokens", json::array({bos})}}}}}};
  root["decoder"] = {
      {"type", "Sequence"},
      {"decoders",
       json::array({{{"type", "Replace"}, {"pattern", {{"String", kMetaspace}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
  root["model"] = {{"type", "BPE"},
                   {"dropout", nullptr},
                   {"unk_token", pieces[Llama2cTokenizer::kUnk]},
                   {"continuing_subword_prefix", nullptr},
                   {"end_of_word_suffix", nullptr},
                   {"fuse_unk", false},
                   {"byte_fallback", true},
                   {"ignore_merges", false},
                   {"vocab", vocab},
                   {"merges", merge_list}};
  return root.dump(1);
}

absl::StatusOr<std::string> ExportHfTokenizerConfigJson(const Tokenizer& tokenizer) {
  ASSIGN_OR_RETURN(const Llama2cTokenizer* tok, AsLlama2c(tokenizer));
  json config;
  config["add_bos_token"] = true;
  config["add_eos_token"] = false;
  config["bos_token"] = ToHfPiece(tok->IdToPiece(Llama2cTokenizer::kBos));
  config["eos_token"] = ToHfPiece(tok->IdToPiece(Llama2cTokenizer::kEos));
  config["unk_token"] = ToHfPiece(tok->IdToPiece(Llama2cTokenizer::kUnk));
  config["pad_token"] = nullptr;
  config["clean_up_tokenization_spaces"] = false;
  config["legacy"] = true;
  config["tokenizer_class"] = "LlamaTokenizer";
  return config.dump(2);
}

}  // namespace kvasir
