#include "tools/bench/dataset.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace kvasir::bench {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open dataset file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int UniformInt(std::mt19937_64& rng, int lo, int hi) {
  return std::uniform_int_distribution<int>(lo, hi)(rng);
}

// Decodes `ids`, re-encodes, and trims or extends until the text is exactly `target` tokens
// (a decoded run of ids need not re-encode to the same number of tokens). Returns the prompt
// and its final token length.
std::pair<std::string, int> DecodeToTargetLen(const TokenCounter& tok, std::vector<int32_t> ids,
                                              int target, std::mt19937_64& rng) {
  std::string text = tok.Decode(ids);
  for (int attempt = 0; attempt < 10; ++attempt) {
    auto enc = tok.Encode(text);
    if (!enc.ok()) break;
    ids = std::move(enc).value();
    if (static_cast<int>(ids.size()) == target) break;
    if (static_cast<int>(ids.size()) > target) {
      ids.resize(target);
    } else {
      while (static_cast<int>(ids.size()) < target) {
        ids.push_back(UniformInt(rng, 0, tok.vocab_size() - 1));
      }
    }
    text = tok.Decode(ids);
  }
  return {text, tok.Count(text)};
}

std::string WordRun(int n, int start) {
  const auto& words = FallbackWords();
  std::string s;
  for (int k = 0; k < n; ++k) {
    if (k) s.push_back(' ');
    s += words[static_cast<size_t>(start + k) % words.size()];
  }
  return s;
}

const char* const kBuiltinPoem[] = {
    "The lantern burns where quiet rivers bend,",
    "And morning gathers silver on the hill;",
    "The sparrow knows the hour the winters end,",
    "Though every field lies frozen, white and still.",
    "I counted stars the way a miser counts",
    "His hoarded coins beneath a borrowed light,",
    "And found the sum of all the small amounts",
    "Was more than any single thing in sight.",
    "So let the tide come in and wash the sand,",
    "Let every written name dissolve in foam;",
    "The shore remembers what it cannot stand,",
    "And every wandering ship returns to home.",
    "Then speak, old clock, and tell me what you keep:",
    "The hours we spent, or those we lost to sleep?",
    "A garden grows in spite of careless hands,",
    "Its roses climbing where the walls are worn;",
    "The gardener sleeps, and still the ivy stands,",
    "And every evening folds into the morn.",
};

}  // namespace

absl::StatusOr<std::vector<SampleRequest>> SampleRandom(const DatasetOptions& o,
                                                        const TokenCounter& tok) {
  if (!(o.random_range_ratio >= 0.0 && o.random_range_ratio < 1.0)) {
    return absl::InvalidArgumentError("--random-range-ratio must be in [0, 1)");
  }
  std::mt19937_64 rng(o.seed);
  const bool exact = tok.exact() && tok.vocab_size() > 0;
  const int special = exact ? tok.num_special_tokens_to_add() : 0;
  const int real_input = std::max(0, o.random_input_len - special);
  const double r = o.random_range_ratio;
  const int in_lo = static_cast<int>(std::floor(real_input * (1 - r)));
  const int in_hi = static_cast<int>(std::ceil(real_input * (1 + r)));
  const int out_lo = std::max(1, static_cast<int>(std::floor(o.random_output_len * (1 - r))));
  const int out_hi = std::max(1, static_cast<int>(std::ceil(o.random_output_len * (1 + r))));
  if (o.random_prefix_len + in_lo < 1) {
    return absl::InvalidArgumentError(
        "--random-input-len is too small: the shortest prompt would have no tokens");
  }
  const int vocab = exact ? tok.vocab_size() : static_cast<int>(FallbackWords().size());
  std::vector<int> in_lens(o.num_prompts), out_lens(o.num_prompts), offsets(o.num_prompts);
  for (int& v : in_lens) v = UniformInt(rng, in_lo, in_hi);
  for (int& v : out_lens) v = UniformInt(rng, out_lo, out_hi);
  for (int& v : offsets) v = UniformInt(rng, 0, vocab - 1);
  std::vector<int32_t> prefix;
  for (int k = 0; k < o.random_prefix_len; ++k) prefix.push_back(UniformInt(rng, 0, vocab - 1));

  std::vector<SampleRequest> out;
  out.reserve(o.num_prompts);
  for (int i = 0; i < o.num_prompts; ++i) {
    SampleRequest s;
    s.expected_output_len = out_lens[i];
    const int total = o.random_prefix_len + in_lens[i];
    if (exact) {
      std::vector<int32_t> ids = prefix;
      for (int k = 0; k < in_lens[i]; ++k) ids.push_back((offsets[i] + i + k) % vocab);
      auto [text, len] = DecodeToTargetLen(tok, std::move(ids), total, rng);
      s.prompt = std::move(text);
      s.prompt_len = len;
    } else {
      std::string p;
      for (int32_t w : prefix) {
        p += FallbackWords()[w];
        p.push_back(' ');
      }
      p += WordRun(in_lens[i], offsets[i] + i);
      s.prompt = std::move(p);
      s.prompt_len = total;
    }
    out.push_back(std::move(s));
  }
  return out;
}

absl::StatusOr<std::vector<SampleRequest>> SampleShareGpt(const DatasetOptions& o,
                                                          const TokenCounter& tok) {
  if (o.path.empty())
    return absl::InvalidArgumentError("--dataset-name sharegpt needs --dataset-path");
  ASSIGN_OR_RETURN(std::string text, ReadFile(o.path));
  nlohmann::json data = nlohmann::json::parse(text, nullptr, false);
  if (data.is_discarded() || !data.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(o.path, ": not a ShareGPT JSON array"));
  }
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const auto& entry : data) {
    if (!entry.is_object() || !entry.contains("conversations")) continue;
    const auto& conv = entry["conversations"];
    if (!conv.is_array() || conv.size() < 2) continue;
    if (!conv[0].is_object() || !conv[1].is_object()) continue;
    auto v0 = conv[0].find("value");
    auto v1 = conv[1].find("value");
    if (v0 == conv[0].end() || v1 == conv[1].end() || !v0->is_string() || !v1->is_string()) {
      continue;
    }
    pairs.emplace_back(v0->get<std::string>(), v1->get<std::string>());
  }
  std::mt19937_64 rng(o.seed);
  std::shuffle(pairs.begin(), pairs.end(), rng);
  std::vector<SampleRequest> out;
  for (const auto& [prompt, completion] : pairs) {
    if (static_cast<int>(out.size()) >= o.num_prompts) break;
    SampleRequest s;
    s.prompt = prompt;
    s.prompt_len = tok.Count(prompt);
    const bool fixed = o.sharegpt_output_len > 0;
    s.expected_output_len = fixed ? o.sharegpt_output_len : tok.Count(completion);
    if (s.prompt_len < 4 || (!fixed && s.expected_output_len < 4)) continue;
    if (s.prompt_len > 1024 || s.prompt_len + s.expected_output_len > 2048) continue;
    out.push_back(std::move(s));
  }
  if (out.empty())
    return absl::InvalidArgumentError(absl::StrCat(o.path, ": no usable conversations"));
  // Oversample (as vLLM does) when the file has fewer usable pairs than --num-prompts.
  for (size_t i = 0; static_cast<int>(out.size()) < o.num_prompts; ++i) out.push_back(out[i]);
  return out;
}

absl::StatusOr<std::vector<SampleRequest>> SampleSonnetLike(const DatasetOptions& o,
                                                            const TokenCounter& tok) {
  std::vector<std::string> lines;
  if (!o.path.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(o.path));
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) lines.push_back(line + "\n");
    }
  } else {
    for (const char* l : kBuiltinPoem) lines.push_back(std::string(l) + "\n");
  }
  if (lines.empty()) return absl::InvalidArgumentError("sonnet-like dataset has no lines");
  const std::string base = "Pick as many lines as you can from these poem lines:\n";
  const int base_len = tok.Count(base);
  double avg = 0;
  for (const auto& l : lines) avg += tok.Count(l);
  avg /= static_cast<double>(lines.size());
  if (o.sonnet_input_len <= base_len) {
    return absl::InvalidArgumentError("--sonnet-input-len must exceed the instruction length");
  }
  const int prefix_lines =
      static_cast<int>(std::floor(std::max(0, o.sonnet_prefix_len - base_len) / avg));
  const int total_lines = static_cast<int>(std::floor((o.sonnet_input_len - base_len) / avg));
  std::string prefix = base;
  for (int k = 0; k < prefix_lines; ++k) prefix += lines[k % lines.size()];
  std::mt19937_64 rng(o.seed);
  std::vector<SampleRequest> out;
  for (int i = 0; i < o.num_prompts; ++i) {
    SampleRequest s;
    s.prompt = prefix;
    for (int k = prefix_lines; k < total_lines; ++k) {
      s.prompt += lines[UniformInt(rng, 0, static_cast<int>(lines.size()) - 1)];
    }
    s.prompt_len = tok.Count(s.prompt);
    s.expected_output_len = o.sonnet_output_len;
    out.push_back(std::move(s));
  }
  return out;
}

absl::StatusOr<std::vector<SampleRequest>> SampleCustom(const DatasetOptions& o,
                                                        const TokenCounter& tok) {
  if (o.path.empty())
    return absl::InvalidArgumentError("--dataset-name custom needs --dataset-path");
  ASSIGN_OR_RETURN(std::string text, ReadFile(o.path));
  std::istringstream in(text);
  std::vector<SampleRequest> out;
  int line_no = 0;
  for (std::string line; std::getline(in, line) && static_cast<int>(out.size()) < o.num_prompts;) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("prompt") || !j["prompt"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(o.path, ":", line_no, ": expected a JSON object with a \"prompt\" string"));
    }
    SampleRequest s;
    s.prompt = j["prompt"].get<std::string>();
    s.prompt_len = tok.Count(s.prompt);
    s.expected_output_len = o.custom_output_len;
    if (o.custom_output_len < 0) {
      s.expected_output_len = j.contains("output_tokens") && j["output_tokens"].is_number_integer()
                                  ? j["output_tokens"].get<int>()
                                  : 256;
    }
    out.push_back(std::move(s));
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(o.path, ": no prompts"));
  for (size_t i = 0; static_cast<int>(out.size()) < o.num_prompts; ++i) out.push_back(out[i]);
  return out;
}

absl::StatusOr<std::vector<SampleRequest>> SampleRequests(const DatasetOptions& options,
                                                          const TokenCounter& counter) {
  if (options.num_prompts <= 0) return absl::InvalidArgumentError("--num-prompts must be > 0");
  if (options.name == "random") {
    if (!options.path.empty()) {
      return absl::InvalidArgumentError("Cannot use 'random' dataset with --dataset-path");
    }
    return SampleRandom(options, counter);
  }
  if (options.name == "sharegpt") return SampleShareGpt(options, counter);
  if (options.name == "sonnet-like" || options.name == "sonnet")
    return SampleSonnetLike(options, counter);
  if (options.name == "custom") return SampleCustom(options, counter);
  return absl::InvalidArgumentError(absl::StrCat("unknown --dataset-name '", options.name,
                                                 "' (random, sharegpt, sonnet-like, custom)"));
}

}  // namespace kvasir::bench
