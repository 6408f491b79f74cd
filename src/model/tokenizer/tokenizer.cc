#include "model/tokenizer/tokenizer.h"

#include <filesystem>

#include "model/tokenizer/hf_tokenizer.h"
#include "model/tokenizer/internal/utf8.h"
#include "model/tokenizer/llama2c_tokenizer.h"

namespace kvasir {

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string bytes;
  DecodeContext ctx;
  for (const int32_t id : ids) {
    bytes += TokenBytes(id, ctx, skip_special);
    if (!(skip_special && IsSpecial(id)) && id >= 0 && id < vocab_size()) ctx.first = false;
    ctx.prev_id = id;
  }
  return tokenizer_internal::SanitizeUtf8(bytes);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFile(const std::string& path) {
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) {
    ASSIGN_OR_RETURN(auto tok, HfTokenizer::FromFile(path));
    return std::unique_ptr<Tokenizer>(std::move(tok));
  }
  ASSIGN_OR_RETURN(auto tok, Llama2cTokenizer::FromFile(path));
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir) {
  const std::filesystem::path dir(model_dir);
  std::error_code ec;
  for (const char* name : {"tokenizer.json", "tokenizer.bin"}) {
    const std::filesystem::path p = dir / name;
    if (std::filesystem::is_regular_file(p, ec)) return LoadTokenizerFile(p.string());
  }
  return absl::NotFoundError(
      absl::StrCat("no tokenizer.json or tokenizer.bin in model directory '", model_dir, "'"));
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

void AdvanceDecodeContext(const Tokenizer& tokenizer, int32_t id, bool skip_special,
                          DecodeContext* ctx) {
  if (!(skip_special && tokenizer.IsSpecial(id)) && id >= 0 && id < tokenizer.vocab_size()) {
    ctx->first = false;
  }
  ctx->prev_id = id;
}

std::string TokenText(const Tokenizer& tokenizer, int32_t id, const DecodeContext& ctx) {
  return tokenizer_internal::SanitizeUtf8(tokenizer.TokenBytes(id, ctx, /*skip_special=*/true));
}

void IncrementalDecoder::Continue(const std::vector<int32_t>& context) {
  for (int32_t id : context) AdvanceDecodeContext(tokenizer_, id, skip_special_, &ctx_);
}

std::string IncrementalDecoder::Push(int32_t id) {
  pending_ += tokenizer_.TokenBytes(id, ctx_, skip_special_);
  AdvanceDecodeContext(tokenizer_, id, skip_special_, &ctx_);
  // Emit every complete character (and U+FFFD for bytes that can never become one); hold back
  // a trailing sequence that may still be completed by the next token.
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    const tokenizer_internal::Utf8Step step = tokenizer_internal::NextUtf8(pending_, pos);
    if (step.kind == tokenizer_internal::Utf8Step::kIncomplete) break;
    if (step.kind == tokenizer_internal::Utf8Step::kChar) {
      out.append(pending_, pos, step.length);
    } else {
      out.append(tokenizer_internal::kReplacementChar);
    }
    pos += step.length;
  }
  pending_.erase(0, pos);
  return out;
}

std::string IncrementalDecoder::Flush() {
  std::string out = tokenizer_internal::SanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace kvasir
