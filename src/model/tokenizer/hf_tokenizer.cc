#include "model/tokenizer/hf_tokenizer.h"


#include <algorithm>
#include <filesystem>
#include <functional>
#include <optional>
#include <utility>

#include "common/mapped_file.h"
#include "model/tokenizer/internal/bpe_merge.h"
#include "model/tokenizer/internal/byte_level.h"
#include "model/tokenizer/internal/utf8.h"
#include "nlohmann/json.hpp"

namespace kvasir {

using json = nlohmann::json;
using tokenizer_internal::Regex;

namespace {

constexpr int32_t kMaxVocab = 1 << 24;
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = 1 << 16;

// The GPT-2 pattern ByteLevel uses when use_regex is set.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr char kMetaspace[] = "\xE2\x96\x81";  // U+2581 ▁

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

absl::Status Malformed(std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", std::string(what)));
}

void ReplaceAll(std::string* s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t hit = s->find(from, pos);
    if (hit == std::string::npos) break;
    out.append(*s, pos, hit - pos);
    out.append(to);
    pos = hit + from.size();
  }
  out.append(*s, pos, std::string::npos);
  *s = std::move(out);
}


bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// "x" or {"content": "x"} (tokenizer_config.json writes both).
std::string TokenName(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) {
    return j["content"].get<std::string>();
  }
  return "";
}

std::string TypeOf(const json& j) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) return "";
  return j["type"].get<std::string>();
}

bool GetBool(const json& j, const char* key, bool fallback) {
  if (!j.contains(key) || !j[key].is_boolean()) return fallback;
  return j[key].get<bool>();
}

}  // namespace

struct HfTokenizer::Impl {
  struct AddedToken {
    std::string content;
    int32_t id;
    bool special;
    bool lstrip;
    bool rstrip;
  };
  struct NormStep {
    bool prepend;  // else replace
    std::string a;
    std::string b;
  };
  enum class Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext };
  enum class Scheme { kAlways, kFirst, kNever };
  struct PreStep {
    enum Kind { kSplit, kByteLevel, kMetaspace } kind;
    std::unique_ptr<Regex> regex;  // kSplit, kByteLevel with use_regex
    Behavior behavior = Behavior::kIsolated;
    bool add_prefix_space = false;  // kByteLevel
    std::string replacement;        // kMetaspace
    Scheme scheme = Scheme::kAlways;
    bool split = false;
  };
  struct DecodeStep {
    enum Kind { kReplace, kByteFallback, kByteLevel, kMetaspace } kind;
    std::string a;
    std::string b;
  };
  struct MergeInfo {
    int32_t rank;
    int32_t merged;
  };

  std::vector<AddedToken> added;
  std::array<std::vector<int32_t>, 256> added_by_first_byte;  // indices into added, longest first
  std::vector<NormStep> normalizers;
  std::vector<PreStep> pre_tokenizers;
  std::vector<DecodeStep> decoders;
  size_t strip_first_spaces = 0;

  StringMap vocab;  // internal form (raw bytes when byte-level) -> id
  std::unordered_map<uint64_t, MergeInfo> merges;
  std::array<int32_t, 256> byte_ids;         // <0xHH> tokens, -1 if absent
  std::array<int32_t, 256> single_byte_ids;  // byte-level: the token of one raw byte
  bool byte_fallback = false;
  bool ignore_merges = false;
  bool fuse_unk = false;
  int32_t unk_id = -1;

  static uint64_t Key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  int32_t Lookup(std::string_view s) const {
    auto it = vocab.find(s);
    return it == vocab.end() ? -1 : it->second;
  }
};

namespace {

using Impl = HfTokenizer::Impl;

absl::Status ParseNormalizer(const json& j, Impl* impl) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array()) {
      return Malformed("Sequence normalizer without a 'normalizers' array");
    }
    for (const json& n : j["normalizers"]) RETURN_IF_ERROR(ParseNormalizer(n, impl));
    return absl::OkStatus();
  }
  if (type == "Prepend") {
    if (!j.contains("prepend") || !j["prepend"].is_string()) {
      return Malformed("Prepend normalizer without a 'prepend' string");
    }
    impl->normalizers.push_back({true, j["prepend"].get<std::string>(), ""});
    return absl::OkStatus();
  }
  if (type == "Replace") {
    if (!j.contains("pattern") || !j["pattern"].is_object() || !j["pattern"].contains("String") ||
        !j["pattern"]["String"].is_string() || !j.contains("content") ||
        !j["content"].is_string()) {
      return absl::UnimplementedError(
          "tokenizer.json: only Replace normalizers with a String pattern are supported");
    }
    impl->normalizers.push_back(
        {false, j["pattern"]["String"].get<std::string>(), j["content"].get<std::string>()});
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat("tokenizer.json: unsupported normalizer type '",
                                               type, "' (supported: Sequence, Prepend, Replace)"));
}

absl::StatusOr<Impl::Scheme> ParseScheme(const json& j) {
  if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
    const std::string s = j["prepend_scheme"].get<std::string>();
    if (s == "always") return Impl::Scheme::kAlways;
    if (s == "first") return Impl::Scheme::kFirst;
    if (s == "never") return Impl::Scheme::kNever;
    return Malformed(absl::StrCat("unknown Metaspace prepend_scheme '", s, "'"));
  }
  return GetBool(j, "add_prefix_space", true) ? Impl::Scheme::kAlways : Impl::Scheme::kNever;
}

absl::Status ParsePreTokenizer(const json& j, Impl* impl) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array()) {
      return Malformed("Sequence pre_tokenizer without a 'pretokenizers' array");
    }
    for (const json& p : j["pretokenizers"]) RETURN_IF_ERROR(ParsePreTokenizer(p, impl));
    return absl::OkStatus();
  }
  Impl::PreStep step;
  if (type == "Split") {
    step.kind = Impl::PreStep::kSplit;
    if (!j.contains("pattern") || !j["pattern"].is_object()) {
      return Malformed("Split pre_tokenizer without a 'pattern'");
    }
    const json& p = j["pattern"];
    std::string pattern;
    if (p.contains("Regex") && p["Regex"].is_string()) {
      pattern = p["Regex"].get<std::string>();
    } else if (p.contains("String") && p["String"].is_string()) {
      pattern = absl::StrCat("\\Q", p["String"].get<std::string>(), "\\E");
    } else {
      return Malformed("Split pattern is neither {\"Regex\": ...} nor {\"String\": ...}");
    }
    if (GetBool(j, "invert", false)) {
      return absl::UnimplementedError("tokenizer.json: Split with invert=true is not supported");
    }
    const std::string behavior = j.contains("behavior") && j["behavior"].is_string()
                                     ? j["behavior"].get<std::string>()
                                     : "Isolated";
    if (behavior == "Isolated") {
      step.behavior = Impl::Behavior::kIsolated;
    } else if (behavior == "Removed") {
      step.behavior = Impl::Behavior::kRemoved;
    } else if (behavior == "MergedWithPrevious") {
      step.behavior = Impl::Behavior::kMergedWithPrevious;
    } else if (behavior == "MergedWithNext") {
      step.behavior = Impl::Behavior::kMergedWithNext;
    } else {
      return absl::UnimplementedError(
          absl::StrCat("tokenizer.json: unsupported Split behavior '", behavior, "'"));
    }
    ASSIGN_OR_RETURN(step.regex, Regex::Compile(pattern));
  } else if (type == "ByteLevel") {
    step.kind = Impl::PreStep::kByteLevel;
    step.add_prefix_space = GetBool(j, "add_prefix_space", true);
    if (GetBool(j, "use_regex", true)) {
      ASSIGN_OR_RETURN(step.regex, Regex::Compile(kGpt2Pattern));
    }
  } else if (type == "Metaspace") {
    step.kind = Impl::PreStep::kMetaspace;
    step.replacement = j.contains("replacement") && j["replacement"].is_string()
                           ? j["replacement"].get<std::string>()
                           : kMetaspace;
    ASSIGN_OR_RETURN(step.scheme, ParseScheme(j));
    step.split = GetBool(j, "split", true);
  } else {
    return absl::UnimplementedError(
        absl::StrCat("tokenizer.json: unsupported pre_tokenizer type '", type,
                     "' (supported: Sequence, Split, ByteLevel, Metaspace)"));
  }
  impl->pre_tokenizers.push_back(std::move(step));
  return absl::OkStatus();
}

absl::Status ParseDecoder(const json& j, Impl* impl) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = TypeOf(j);
  if (type == "Sequence") {
    if (!j.contains("decoders") || !j["decoders"].is_array()) {
      return Malformed("Sequence decoder without a 'decoders' array");
    }
    for (const json& d : j["decoders"]) RETURN_IF_ERROR(ParseDecoder(d, impl));
    return absl::OkStatus();
  }
  if (type == "Replace") {
    if (!j.contains("pattern") || !j["pattern"].is_object() || !j["pattern"].contains("String") ||
        !j["pattern"]["String"].is_string() || !j.contains("content") ||
        !j["content"].is_string()) {
      return absl::UnimplementedError(
          "tokenizer.json: only Replace decoders with a String pattern are supported");
    }
    impl->decoders.push_back({Impl::DecodeStep::kReplace, j["pattern"]["String"].get<std::string>(),
                              j["content"].get<std::string>()});
  } else if (type == "ByteFallback") {
    impl->decoders.push_back({Impl::DecodeStep::kByteFallback, "", ""});
  } else if (type == "Fuse") {
    // Concatenation is what decoding does anyway.
  } else if (type == "Strip") {
    const std::string content =
        j.contains("content") && j["content"].is_string() ? j["content"].get<std::string>() : " ";
    const int64_t start =
        j.contains("start") && j["start"].is_number_integer() ? j["start"].get<int64_t>() : 0;
    const int64_t stop =
        j.contains("stop") && j["stop"].is_number_integer() ? j["stop"].get<int64_t>() : 0;
    if (content != " " || stop != 0 || start < 0 || start > 16) {
      return absl::UnimplementedError(
          "tokenizer.json: only Strip decoders removing leading spaces are supported");
    }
    impl->strip_first_spaces = static_cast<size_t>(start);
  } else if (type == "ByteLevel") {
    impl->decoders.push_back({Impl::DecodeStep::kByteLevel, "", ""});
  } else if (type == "Metaspace") {
    const std::string replacement = j.contains("replacement") && j["replacement"].is_string()
                                        ? j["replacement"].get<std::string>()
                                        : kMetaspace;
    ASSIGN_OR_RETURN(Impl::Scheme scheme, ParseScheme(j));
    impl->decoders.push_back({Impl::DecodeStep::kMetaspace, replacement, " "});
    if (scheme != Impl::Scheme::kNever) impl->strip_first_spaces = 1;
  } else {
    return absl::UnimplementedError(
        absl::StrCat("tokenizer.json: unsupported decoder type '", type,
                     "' (supported: Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel, "
                     "Metaspace)"));
  }
  return absl::OkStatus();
}

// The id of the first SpecialToken of a TemplateProcessing "single" template, or "".
std::string TemplateBos(const json& pp) {
  const std::string type = TypeOf(pp);
  if (type == "Sequence" && pp.contains("processors") && pp["processors"].is_array()) {
    for (const json& p : pp["processors"]) {
      std::string bos = TemplateBos(p);
      if (!bos.empty()) return bos;
    }
    return "";
  }
  if (type != "TemplateProcessing" || !pp.contains("single") || !pp["single"].is_array() ||
      pp["single"].empty()) {
    return "";
  }
  const json& first = pp["single"][0];
  if (!first.is_object() || !first.contains("SpecialToken")) return "";
  const json& st = first["SpecialToken"];
  if (!st.is_object() || !st.contains("id") || !st["id"].is_string()) return "";
  return st["id"].get<std::string>();
}

}  // namespace

HfTokenizer::HfTokenizer() : impl_(std::make_unique<Impl>()) {}
HfTokenizer::~HfTokenizer() = default;

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::FromFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  std::string config;
  const std::filesystem::path config_path =
      std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) {
    ASSIGN_OR_RETURN(config, ReadFileToString(config_path.string()));
  }
  auto tok = FromJson(text, config);
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(path, ": ", tok.status().message()));
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::FromJson(std::string_view tokenizer_json,
                                                                   std::string_view config_json) {
  json root = json::parse(tokenizer_json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return Malformed("not valid JSON");
  if (!root.is_object()) return Malformed("top level is not a JSON object");
  json config;
  if (!config_json.empty()) {
    config = json::parse(config_json, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError("tokenizer_config.json: not a valid JSON object");
    }
  }

  auto tok = std::unique_ptr<HfTokenizer>(new HfTokenizer());
  Impl* impl = tok->impl_.get();

  if (!root.contains("model") || !root["model"].is_object()) return Malformed("no 'model' object");
  const json& model = root["model"];
  const std::string model_type = TypeOf(model);
  if (model_type != "BPE") {
    return absl::UnimplementedError(absl::StrCat("tokenizer.json: unsupported model type '",
                                                 model_type, "' (only BPE is supported)"));
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
      return absl::UnimplementedError(
          absl::StrCat("tokenizer.json: BPE ", key, " is not supported"));
    }
  }
  if (model.contains("dropout") && model["dropout"].is_number() &&
      model["dropout"].get<double>() > 0) {
    return absl::UnimplementedError("tokenizer.json: BPE dropout is not supported");
  }

  RETURN_IF_ERROR(ParseNormalizer(root.value("normalizer", json()), impl));
  RETURN_IF_ERROR(ParsePreTokenizer(root.value("pre_tokenizer", json()), impl));
  RETURN_IF_ERROR(ParseDecoder(root.value("decoder", json()), impl));
  for (const Impl::PreStep& step : impl->pre_tokenizers) {
    if (step.kind == Impl::PreStep::kByteLevel) tok->byte_level_ = true;
  }

  // Vocabulary. Byte-level strings are kept internally as the raw bytes they stand for, so BPE
  // runs directly on the UTF-8 of the text.
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return Malformed("model has no 'vocab' object");
  }
  if (model["vocab"].empty()) return Malformed("model vocab is empty");
  int32_t max_id = -1;
  for (const auto& [piece, id_json] : model["vocab"].items()) {
    if (!id_json.is_number_integer()) {
      return Malformed(absl::StrCat("vocab entry '", piece, "' has a non-integer id"));
    }
    const int64_t id = id_json.get<int64_t>();
    if (id < 0 || id >= kMaxVocab) {
      return Malformed(absl::StrCat("vocab entry '", piece, "' has out-of-range id ", id));
    }
    max_id = std::max(max_id, static_cast<int32_t>(id));
  }
  std::vector<json> added_json;
  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    if (!root["added_tokens"].is_array()) return Malformed("'added_tokens' is not an array");
    for (const json& a : root["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
          !a.contains("content") || !a["content"].is_string() ||
          a["content"].get<std::string>().empty()) {
        return Malformed("an added_tokens entry lacks an integer 'id' or a non-empty 'content'");
      }
      const int64_t id = a["id"].get<int64_t>();
      if (id < 0 || id >= kMaxVocab) {
        return Malformed(absl::StrCat("added token id ", id, " out of range"));
      }
      max_id = std::max(max_id, static_cast<int32_t>(id));
      added_json.push_back(a);
    }
  }
  const size_t n = static_cast<size_t>(max_id) + 1;
  tok->pieces_.assign(n, "");
  tok->special_.assign(n, 0);
  std::vector<uint8_t> seen(n, 0);
  std::string internal;
  for (const auto& [piece, id_json] : model["vocab"].items()) {
    const int32_t id = static_cast<int32_t>(id_json.get<int64_t>());
    if (seen[id]) return Malformed(absl::StrCat("vocab id ", id, " is used twice"));
    seen[id] = 1;
    tok->pieces_[id] = piece;
    if (!tok->byte_level_ || !tokenizer_internal::ByteLevelToBytes(piece, &internal)) {
      internal = piece;
    }
    impl->vocab.emplace(internal, id);
  }

  // Merges, ranked by position; both "a b" and ["a", "b"] forms.
  if (model.contains("merges") && !model["merges"].is_null()) {
    if (!model["merges"].is_array()) return Malformed("model 'merges' is not an array");
    const json& merges = model["merges"];
    impl->merges.reserve(merges.size());
    std::string a, b;
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const json& m = merges[rank];
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
          return Malformed(absl::StrCat("merge #", rank, " '", s, "' is not two tokens"));
        }
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        return Malformed(absl::StrCat("merge #", rank, " is neither \"a b\" nor [\"a\", \"b\"]"));
      }
      int32_t ids[3];
      std::string parts[3] = {a, b, a + b};
      for (int k = 0; k < 3; ++k) {
        if (!tok->byte_level_ || !tokenizer_internal::ByteLevelToBytes(parts[k], &internal)) {
          internal = parts[k];
        }
        ids[k] = impl->Lookup(internal);
        if (ids[k] < 0) {
          return Malformed(absl::StrCat("merge #", rank, " ('", a, "', '", b,
                                        "') references token '", parts[k],
                                        "' that is not in the vocab"));
        }
      }
      // Later duplicates win, as in HF tokenizers and transformers.js.
      impl->merges[Impl::Key(ids[0], ids[1])] = {static_cast<int32_t>(rank), ids[2]};
    }
  }

  impl->byte_fallback = GetBool(model, "byte_fallback", false);
  impl->ignore_merges = GetBool(model, "ignore_merges", false);
  impl->fuse_unk = GetBool(model, "fuse_unk", false);
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    const std::string unk = model["unk_token"].get<std::string>();
    impl->unk_id = impl->Lookup(unk);
  }
  impl->byte_ids.fill(-1);
  impl->single_byte_ids.fill(-1);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    impl->byte_ids[b] = impl->Lookup(name);
    impl->single_byte_ids[b] = impl->Lookup(std::string(1, static_cast<char>(b)));
  }

  // Added tokens override the vocab string of their id and are split out of the input.
  for (const json& a : added_json) {
    Impl::AddedToken at;
    at.id = static_cast<int32_t>(a["id"].get<int64_t>());
    at.content = a["content"].get<std::string>();
    if (tokenizer_internal::FirstInvalidUtf8(at.content) != at.content.size()) {
      return Malformed(absl::StrCat("added token ", at.id, " is not valid UTF-8"));
    }
    at.special = GetBool(a, "special", false);
    at.lstrip = GetBool(a, "lstrip", false);
    at.rstrip = GetBool(a, "rstrip", false);
    if (seen[at.id] && tok->pieces_[at.id] != at.content) {
      return Malformed(absl::StrCat("added token '", at.content, "' reuses id ", at.id, " of '",
                                    tok->pieces_[at.id], "'"));
    }
    seen[at.id] = 1;
    tok->pieces_[at.id] = at.content;
    tok->special_[at.id] = at.special;
    impl->added.push_back(std::move(at));
  }
  for (size_t i = 0; i < impl->added.size(); ++i) {
    impl->added_by_first_byte[static_cast<uint8_t>(impl->added[i].content[0])].push_back(
        static_cast<int32_t>(i));
  }
  for (auto& list : impl->added_by_first_byte) {
    std::stable_sort(list.begin(), list.end(), [&](int32_t x, int32_t y) {
      return impl->added[x].content.size() > impl->added[y].content.size();
    });
  }

  // What each token decodes to; added tokens decode to their content.
  tok->decoded_.assign(n, "");
  std::vector<uint8_t> is_added(n, 0);
  for (const Impl::AddedToken& at : impl->added) {
    is_added[at.id] = 1;
    tok->decoded_[at.id] = at.content;
  }
  for (size_t id = 0; id < n; ++id) {
    if (is_added[id]) continue;
    std::string s = tok->pieces_[id];
    for (const Impl::DecodeStep& step : impl->decoders) {
      switch (step.kind) {
        case Impl::DecodeStep::kReplace:
        case Impl::DecodeStep::kMetaspace:
          ReplaceAll(&s, step.a, step.b);
          break;
        case Impl::DecodeStep::kByteFallback: {
          uint8_t byte;
          if (tokenizer_internal::ParseByteToken(s, &byte)) s.assign(1, static_cast<char>(byte));
          break;
        }
        case Impl::DecodeStep::kByteLevel:
          if (tokenizer_internal::ByteLevelToBytes(s, &internal)) s = internal;
          break;
      }
    }
    tok->decoded_[id] = std::move(s);
  }

  // BOS: the post-processor's template, else tokenizer_config.json, else a well-known name.
  auto find_id = [&](const std::string& name) -> int32_t {
    if (name.empty()) return -1;
    for (const Impl::AddedToken& at : impl->added) {
      if (at.content == name) return at.id;
    }
    if (!tok->byte_level_ || !tokenizer_internal::ByteLevelToBytes(name, &internal)) {
      internal = name;
    }
    return impl->Lookup(internal);
  };
  tok->bos_id_ = find_id(TemplateBos(root.value("post_processor", json())));
  if (tok->bos_id_ < 0 && config.is_object() && config.contains("bos_token")) {
    tok->bos_id_ = find_id(TokenName(config["bos_token"]));
  }
  if (config.is_object() && config.contains("eos_token")) {
    tok->eos_id_ = find_id(TokenName(config["eos_token"]));
  }
  for (const char* name : {"<s>", "<|begin_of_text|>", "<bos>"}) {
    if (tok->bos_id_ < 0) tok->bos_id_ = find_id(name);
  }
  for (const char* name : {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"}) {
    if (tok->eos_id_ < 0) tok->eos_id_ = find_id(name);
  }
  return tok;
}

std::string HfTokenizer::IdToPiece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return pieces_[id];
}

bool HfTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && special_[id] != 0;
}

std::string HfTokenizer::TokenBytes(int32_t id, const DecodeContext& ctx, bool skip_special) const {
  if (id < 0 || id >= vocab_size()) return "";
  if (skip_special && special_[id]) return "";
  std::string_view s = decoded_[id];
  if (ctx.first) {
    for (size_t i = 0; i < impl_->strip_first_spaces && !s.empty() && s[0] == ' '; ++i) {
      s.remove_prefix(1);
    }
  }
  return std::string(s);
}

absl::StatusOr<std::vector<int32_t>> HfTokenizer::Encode(std::string_view text,
                                                         bool add_bos) const {
  const size_t bad = tokenizer_internal::FirstInvalidUtf8(text);
  if (bad != text.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text is not valid UTF-8 (bad byte 0x",
        absl::Hex(static_cast<uint8_t>(text[bad]), absl::kZeroPad2), " at offset ", bad, ")"));
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos && bos_id_ >= 0) out.push_back(bos_id_);

  // Split added tokens out first (leftmost, longest at a position), as HF does before
  // normalization. Each section is {text, added id or -1}.
  struct Section {
    std::string_view text;
    int32_t added;  // index into impl_->added, or -1
  };
  std::vector<Section> sections;
  size_t start = 0;
  for (size_t i = 0; i < text.size();) {
    int32_t hit = -1;
    for (int32_t idx : impl_->added_by_first_byte[static_cast<uint8_t>(text[i])]) {
      const std::string& c = impl_->added[idx].content;
      if (text.compare(i, c.size(), c) == 0) {
        hit = idx;
        break;
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    if (i > start) sections.push_back({text.substr(start, i - start), -1});
    sections.push_back({text.substr(i, impl_->added[hit].content.size()), hit});
    i += impl_->added[hit].content.size();
    start = i;
  }
  if (start < text.size()) sections.push_back({text.substr(start), -1});
  for (size_t i = 0; i < sections.size(); ++i) {
    if (sections[i].added < 0) continue;
    const Impl::AddedToken& at = impl_->added[sections[i].added];
    if (at.lstrip && i > 0 && sections[i - 1].added < 0) {
      std::string_view& t = sections[i - 1].text;
      while (!t.empty() && IsAsciiSpace(t.back())) t.remove_suffix(1);
    }
    if (at.rstrip && i + 1 < sections.size() && sections[i + 1].added < 0) {
      std::string_view& t = sections[i + 1].text;
      while (!t.empty() && IsAsciiSpace(t.front())) t.remove_prefix(1);
    }
  }
  for (size_t i = 0; i < sections.size(); ++i) {
    if (sections[i].added >= 0) {
      out.push_back(impl_->added[sections[i].added].id);
    } else if (!sections[i].text.empty()) {
      RETURN_IF_ERROR(EncodeSection(sections[i].text, static_cast<int>(i), &out));
    }
  }
  return out;
}

absl::Status HfTokenizer::EncodeSection(std::string_view section, int section_index,
                                        std::vector<int32_t>* out) const {
  std::string normalized(section);
  for (const Impl::NormStep& step : impl_->normalizers) {
    if (step.prepend) {
      if (!normalized.empty()) normalized.insert(0, step.a);
    } else {
      ReplaceAll(&normalized, step.a, step.b);
    }
  }
  if (normalized.empty()) return absl::OkStatus();

  std::vector<std::string> words = {std::move(normalized)};
  std::vector<std::string> next;
  auto split = [&](const std::string& w, const std::vector<std::pair<size_t, size_t>>& matches,
                   Impl::Behavior behavior) {
    size_t prev = 0;
    std::string pending;  // kMergedWithNext: a delimiter waiting for what follows
    for (const auto& [b, e] : matches) {
      std::string gap = w.substr(prev, b - prev);
      std::string match = w.substr(b, e - b);
      switch (behavior) {
        case Impl::Behavior::kIsolated:
          if (!gap.empty()) next.push_back(std::move(gap));
          next.push_back(std::move(match));
          break;
        case Impl::Behavior::kRemoved:
          if (!gap.empty()) next.push_back(std::move(gap));
          break;
        case Impl::Behavior::kMergedWithPrevious:
          next.push_back(gap + match);
          break;
        case Impl::Behavior::kMergedWithNext:
          if (!pending.empty() || !gap.empty()) next.push_back(pending + gap);
          pending = std::move(match);
          break;
      }
      prev = e;
    }
    std::string tail = pending + w.substr(prev);
    if (!tail.empty()) next.push_back(std::move(tail));
  };
  for (const Impl::PreStep& step : impl_->pre_tokenizers) {
    next.clear();
    for (std::string& w : words) {
      switch (step.kind) {
        case Impl::PreStep::kSplit: {
          ASSIGN_OR_RETURN(auto matches, step.regex->FindAll(w));
          split(w, matches, step.behavior);
          break;
        }
        case Impl::PreStep::kByteLevel: {
          if (step.add_prefix_space && (w.empty() || w[0] != ' ')) w.insert(0, " ");
          if (step.regex != nullptr) {
            ASSIGN_OR_RETURN(auto matches, step.regex->FindAll(w));
            split(w, matches, Impl::Behavior::kIsolated);
          } else {
            next.push_back(std::move(w));
          }
          break;
        }
        case Impl::PreStep::kMetaspace: {
          ReplaceAll(&w, " ", step.replacement);
          const bool prepend = step.scheme == Impl::Scheme::kAlways ||
                               (step.scheme == Impl::Scheme::kFirst && section_index == 0);
          if (prepend && w.compare(0, step.replacement.size(), step.replacement) != 0) {
            w.insert(0, step.replacement);
          }
          if (!step.split) {
            next.push_back(std::move(w));
            break;
          }
          // Each replacement character starts a new word.
          size_t begin = 0;
          for (size_t pos = w.find(step.replacement, 1); pos != std::string::npos;
               pos = w.find(step.replacement, pos + step.replacement.size())) {
            next.push_back(w.substr(begin, pos - begin));
            begin = pos;
          }
          next.push_back(w.substr(begin));
          break;
        }
      }
    }
    words.swap(next);
  }
  for (const std::string& w : words) EncodeWord(w, out);
  return absl::OkStatus();
}

void HfTokenizer::EncodeWord(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (impl_->ignore_merges) {
    const int32_t id = impl_->Lookup(word);
    if (id >= 0) {
      out->push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    auto it = cache_.find(std::string(word));
    if (it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  MergeWord(word, &ids);
  out->insert(out->end(), ids.begin(), ids.end());
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::string(word), std::move(ids));
  }
}

void HfTokenizer::MergeWord(std::string_view word, std::vector<int32_t>* out) const {
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  bool last_was_unk = false;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t len = byte_level_ ? 1 : tokenizer_internal::NextUtf8(word, pos).length;
    const std::string_view ch = word.substr(pos, len);
    pos += len;
    const int32_t id =
        byte_level_ ? impl_->single_byte_ids[static_cast<uint8_t>(ch[0])] : impl_->Lookup(ch);
    if (id >= 0) {
      ids.push_back(id);
      last_was_unk = false;
      continue;
    }
    if (impl_->byte_fallback) {
      bool all = true;
      for (const char c : ch) all = all && impl_->byte_ids[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (const char c : ch) ids.push_back(impl_->byte_ids[static_cast<uint8_t>(c)]);
        last_was_unk = false;
        continue;
      }
    }
    // Unknown character: <unk> (fused with a preceding <unk> if asked); dropped without one.
    if (impl_->unk_id >= 0 && !(impl_->fuse_unk && last_was_unk)) ids.push_back(impl_->unk_id);
    last_was_unk = impl_->unk_id >= 0;
  }
  // The best-ranked merge first, leftmost on ties.
  tokenizer_internal::MergePairs<int32_t>(
      ids, [&](int32_t a, int32_t b) -> std::optional<std::pair<int32_t, int32_t>> {
        auto it = impl_->merges.find(Impl::Key(a, b));
        if (it == impl_->merges.end()) return std::nullopt;
        return std::make_pair(it->second.rank, it->second.merged);
      });
  out->insert(out->end(), ids.begin(), ids.end());
}

}  // namespace kvasir
