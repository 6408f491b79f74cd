// llama2.c tokenizer.bin: int32 max_token_length, then per token float32 score, int32 length,
// `length` bytes. Ids 0 <unk>, 1 <s>, 2 </s>, 3..258 byte fallback <0x00>..<0xFF>.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/tokenizer/tokenizer.h"

namespace kvasir {

class Llama2cTokenizer final : public Tokenizer {
 public:
  // Parses the contents of a tokenizer.bin; the vocabulary size is implied by the data.
  static absl::StatusOr<std::unique_ptr<Llama2cTokenizer>> FromBytes(std::string_view data);
  static absl::StatusOr<std::unique_ptr<Llama2cTokenizer>> FromFile(const std::string& path);

  // As llama2.c's encode(): BOS (if asked), a dummy-prefix space when text is non-empty, one
  // token per codepoint (else its bytes, id = byte + 3), then repeatedly merge the adjacent pair
  // whose concatenation has the highest score (leftmost on ties).
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos) const override;

  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos_id() const override { return kBos < vocab_size() ? kBos : -1; }
  int32_t eos_id() const override { return kEos < vocab_size() ? kEos : -1; }
  std::string IdToPiece(int32_t id) const override;
  // <s> and </s>. <unk> is an ordinary piece, as in llama2.c (and never produced by Encode when
  // the byte tokens exist), so that the HF export can leave it out of added_tokens and encode the
  // text "<unk>" as llama2.c does.
  bool IsSpecial(int32_t id) const override {
    return (id == kBos || id == kEos) && id < vocab_size();
  }
  // As llama2.c's decode(): the piece, without its leading space after BOS (and, so that
  // Decode(Encode(text)) == text without BOS too, at the start of the output); "<0xHH>" pieces
  // are that raw byte.
  std::string TokenBytes(int32_t id, const DecodeContext& ctx, bool skip_special) const override;
  std::string kind() const override { return "llama2.c"; }

  float score(int32_t id) const { return scores_[id]; }
  int32_t max_token_length() const { return max_token_length_; }

  static constexpr int32_t kUnk = 0;
  static constexpr int32_t kBos = 1;
  static constexpr int32_t kEos = 2;
  static constexpr int32_t kByteOffset = 3;

 private:
  Llama2cTokenizer() = default;
  int32_t Lookup(std::string_view piece) const;

  int32_t max_token_length_ = 0;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string_view, int32_t> piece_to_id_;  // views into pieces_
  bool has_byte_tokens_ = false;                               // ids 3..258 are <0x00>..<0xFF>
};

}  // namespace kvasir
