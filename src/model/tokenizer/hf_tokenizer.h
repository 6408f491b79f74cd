// HF tokenizer.json with a BPE model: SentencePiece style (Llama 2: Prepend/Replace normalizer
// or Metaspace pre-tokenizer, byte_fallback) and byte-level style (Llama 3: Split regex +
// ByteLevel, GPT-2 byte-to-unicode mapping). Added tokens are split out of the text before
// normalization, as HF tokenizers do.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "model/tokenizer/internal/regex.h"
#include "model/tokenizer/tokenizer.h"

namespace kvasir {

class HfTokenizer final : public Tokenizer {
 public:
  // `config_json` is the optional tokenizer_config.json ("" when absent): its bos_token and
  // eos_token name the BOS/EOS tokens when the tokenizer.json itself does not.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> FromJson(std::string_view tokenizer_json,
                                                               std::string_view config_json = "");
  // Reads `path` and, when present, tokenizer_config.json in the same directory.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> FromFile(const std::string& path);
  ~HfTokenizer() override;

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, bool add_bos) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  std::string IdToPiece(int32_t id) const override;
  bool IsSpecial(int32_t id) const override;
  std::string TokenBytes(int32_t id, const DecodeContext& ctx, bool skip_special) const override;
  std::string kind() const override { return byte_level_ ? "hf-bpe-bytelevel" : "hf-bpe"; }

  struct Impl;  // the parsed pipeline (normalizer, pre-tokenizer, model, decoder)

 private:
  HfTokenizer();
  absl::Status EncodeSection(std::string_view section, int section_index,
                             std::vector<int32_t>* out) const;
  // BPE over one pre-tokenized word (internal form: raw bytes when byte-level).
  void EncodeWord(std::string_view word, std::vector<int32_t>* out) const;
  void MergeWord(std::string_view word, std::vector<int32_t>* out) const;

  std::unique_ptr<Impl> impl_;
  bool byte_level_ = false;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  std::vector<std::string> pieces_;   // [vocab_size] the vocab strings as in tokenizer.json
  std::vector<std::string> decoded_;  // [vocab_size] bytes each token decodes to
  std::vector<uint8_t> special_;      // [vocab_size]

  mutable absl::Mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace kvasir
