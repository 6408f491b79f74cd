// TokenCounter over the Kvasir tokenizer (src/model/tokenizer).
#include <filesystem>

#include "model/tokenizer/tokenizer.h"
#include "tools/bench/token_counter.h"

namespace kvasir::bench {
namespace {

class KvasirTokenCounter final : public TokenCounter {
 public:
  KvasirTokenCounter(std::unique_ptr<Tokenizer> tok, std::string name)
      : tok_(std::move(tok)), name_(std::move(name)) {}

  int Count(std::string_view text) const override {
    auto ids = tok_->Encode(text, /*add_bos=*/false);
    return ids.ok() ? static_cast<int>(ids->size()) : 0;
  }
  bool exact() const override { return true; }
  std::string name() const override { return name_; }
  int vocab_size() const override { return static_cast<int>(tok_->vocab_size()); }
  // The server prepends BOS when it encodes the prompt (as HF's num_special_tokens_to_add).
  int num_special_tokens_to_add() const override { return tok_->bos_id() >= 0 ? 1 : 0; }
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const override {
    return tok_->Encode(text, /*add_bos=*/false);
  }
  std::string Decode(const std::vector<int32_t>& ids) const override {
    return tok_->Decode(ids, /*skip_special=*/true);
  }

 private:
  std::unique_ptr<Tokenizer> tok_;
  std::string name_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TokenCounter>> LoadTokenCounter(const std::string& path) {
  std::error_code ec;
  const bool is_dir = std::filesystem::is_directory(path, ec);
  auto tok = is_dir ? LoadTokenizer(path) : LoadTokenizerFile(path);
  if (!tok.ok()) return tok.status();
  return std::unique_ptr<TokenCounter>(
      std::make_unique<KvasirTokenCounter>(std::move(tok).value(), path));
}

}  // namespace kvasir::bench
