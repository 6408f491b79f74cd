#include "model/tokenizer/llama2c_tokenizer.h"



#include <cmath>
#include <cstring>
#include <optional>
#include <utility>

#include "common/mapped_file.h"
#include "model/tokenizer/internal/bpe_merge.h"
#include "model/tokenizer/internal/utf8.h"

namespace kvasir {
namespace {


}  // namespace

absl::StatusOr<std::unique_ptr<Llama2cTokenizer>> Llama2cTokenizer::FromFile(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::string data, ReadFileToString(path));
  auto tok = FromBytes(data);
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(path, ": ", tok.status().message()));
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<Llama2cTokenizer>> Llama2cTokenizer::FromBytes(
    std::string_view data) {
  auto tok = std::unique_ptr<Llama2cTokenizer>(new Llama2cTokenizer());
  size_t pos = 0;
  auto read_i32 = [&](int32_t* v) {
    if (data.size() - pos < 4) return false;
    std::memcpy(v, data.data() + pos, 4);
    pos += 4;
    return true;
  };
  if (!read_i32(&tok->max_token_length_)) {
    return absl::InvalidArgumentError("llama2.c tokenizer: file shorter than its 4-byte header");
  }
  if (tok->max_token_length_ <= 0 || tok->max_token_length_ > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("llama2.c tokenizer: implausible max_token_length ", tok->max_token_length_));
  }
  while (pos < data.size()) {
    const int32_t id = static_cast<int32_t>(tok->pieces_.size());
    float score;
    int32_t len;
    if (data.size() - pos < 8) {
      return absl::InvalidArgumentError(
          absl::StrCat("llama2.c tokenizer: truncated entry for token ", id, " at byte ", pos));
    }
    std::memcpy(&score, data.data() + pos, 4);
    std::memcpy(&len, data.data() + pos + 4, 4);
    pos += 8;
    if (len < 0 || len > tok->max_token_length_ || static_cast<size_t>(len) > data.size() - pos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "llama2.c tokenizer: token ", id, " has bad length ", len, " (max_token_length ",
          tok->max_token_length_, ", ", data.size() - pos, " bytes left)"));
    }
    if (std::isnan(score)) {
      return absl::InvalidArgumentError(
          absl::StrCat("llama2.c tokenizer: token ", id, " has a NaN score"));
    }
    tok->pieces_.emplace_back(data.substr(pos, len));
    tok->scores_.push_back(score);
    pos += len;
  }
  if (tok->pieces_.size() <= static_cast<size_t>(kEos)) {
    return absl::InvalidArgumentError(absl::StrCat("llama2.c tokenizer: only ", tok->pieces_.size(),
                                                   " tokens (need at least <unk>, <s>, </s>)"));
  }
  // Duplicate pieces make llama2.c's bsearch ambiguous; the lowest id wins here.
  for (int32_t id = 0; id < static_cast<int32_t>(tok->pieces_.size()); ++id) {
    tok->piece_to_id_.emplace(tok->pieces_[id], id);
  }
  tok->has_byte_tokens_ = tok->pieces_.size() >= static_cast<size_t>(kByteOffset + 256);
  for (int b = 0; tok->has_byte_tokens_ && b < 256; ++b) {
    uint8_t v;
    if (!tokenizer_internal::ParseByteToken(tok->pieces_[kByteOffset + b], &v) || v != b) {
      tok->has_byte_tokens_ = false;
    }
  }
  return tok;
}

int32_t Llama2cTokenizer::Lookup(std::string_view piece) const {
  auto it = piece_to_id_.find(piece);
  return it == piece_to_id_.end() ? -1 : it->second;
}

std::string Llama2cTokenizer::IdToPiece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return pieces_[id];
}

absl::StatusOr<std::vector<int32_t>> Llama2cTokenizer::Encode(std::string_view text,
                                                              bool add_bos) const {
  const size_t bad = tokenizer_internal::FirstInvalidUtf8(text);
  if (bad != text.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text is not valid UTF-8 (bad byte 0x",
        absl::Hex(static_cast<uint8_t>(text[bad]), absl::kZeroPad2), " at offset ", bad, ")"));
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() + 1);
  if (!text.empty()) {
    const int32_t space = Lookup(" ");
    if (space >= 0) ids.push_back(space);
  }
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t n = tokenizer_internal::NextUtf8(text, pos).length;
    const int32_t id = Lookup(text.substr(pos, n));
    if (id >= 0) {
      ids.push_back(id);
    } else {
      // Byte fallback: +3 because the first 3 ids are <unk>, <s>, </s>.
      for (size_t i = 0; i < n; ++i) {
        ids.push_back(has_byte_tokens_ ? static_cast<uint8_t>(text[pos + i]) + kByteOffset : kUnk);
      }
    }
    pos += n;
  }

  // The best-scoring pair first, leftmost on ties, as llama2.c's scan.
  std::string buf;
  tokenizer_internal::MergePairs<float>(
      ids, [&](int32_t a, int32_t b) -> std::optional<std::pair<float, int32_t>> {
        buf.assign(pieces_[a]);
        buf.append(pieces_[b]);
        const int32_t merged = Lookup(buf);
        if (merged < 0) return std::nullopt;
        return std::make_pair(-scores_[merged], merged);
      });

  std::vector<int32_t> out;
  out.reserve(ids.size() + 1);
  if (add_bos) out.push_back(kBos);
  out.insert(out.end(), ids.begin(), ids.end());
  return out;
}

std::string Llama2cTokenizer::TokenBytes(int32_t id, const DecodeContext& ctx,
                                         bool skip_special) const {
  if (id < 0 || id >= vocab_size()) return "";
  if (skip_special && IsSpecial(id)) return "";
  std::string_view piece = pieces_[id];
  if ((ctx.prev_id == kBos || ctx.first) && !piece.empty() && piece[0] == ' ') {
    piece.remove_prefix(1);
  }
  uint8_t byte;
  if (tokenizer_internal::ParseByteToken(piece, &byte)) return std::string(1, static_cast<char>(byte));
  return std::string(piece);
}

}  // namespace kvasir
