// Tokenizers: text <-> token ids for the router (encode prompts, stream detokenized text).
// Two formats: llama2.c tokenizer.bin and HF tokenizer.json (BPE, SentencePiece or byte-level
// style). See README.md for the formats and how the reference fixtures are made.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvasir {

// Where a token sits in the output being decoded; a tokenizer may decode a token differently
// at the start (SentencePiece strips the dummy-prefix space) or after BOS (llama2.c).
struct DecodeContext {
  int32_t prev_id = -1;  // the previous id of the output, skipped or not; -1 at the start
  bool first = true;     // no earlier token has contributed to the output (skipped ones don't)
};

// Implementations are immutable after loading and safe to call from several threads.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes UTF-8 text; invalid UTF-8 -> absl::InvalidArgumentError.
  // add_bos prepends the BOS id when the tokenizer has one.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      bool add_bos) const = 0;
  // Full decode of ids to text (special tokens skipped when skip_special). Invalid or
  // incomplete UTF-8 (e.g. a cut-off byte-fallback sequence) becomes U+FFFD; out-of-range ids
  // are ignored.
  virtual std::string Decode(const std::vector<int32_t>& ids, bool skip_special = true) const;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;                   // -1 if none
  virtual int32_t eos_id() const = 0;                   // -1 if none
  virtual std::string IdToPiece(int32_t id) const = 0;  // the vocab string ("" if out of range)
  virtual bool IsSpecial(int32_t id) const = 0;

  // The raw bytes (possibly an incomplete UTF-8 sequence) that `id` appends to the output.
  // Returns "" for special tokens when skip_special, and for out-of-range ids.
  // Decode(ids) == SanitizeUtf8(concatenation of TokenBytes over ids).
  virtual std::string TokenBytes(int32_t id, const DecodeContext& ctx, bool skip_special) const = 0;

  // Short description of the format for logs ("llama2.c", "hf-bpe-bytelevel", ...).
  virtual std::string kind() const = 0;
};

// Detects the format in a model directory: tokenizer.json (HF) preferred, else tokenizer.bin
// (llama2.c).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);

// Loads one file: *.json -> HF (a tokenizer_config.json next to it is read for BOS/EOS),
// otherwise llama2.c tokenizer.bin.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFile(const std::string& path);

// Moves `ctx` past `id`, as decoding it does.
void AdvanceDecodeContext(const Tokenizer& tokenizer, int32_t id, bool skip_special,
                          DecodeContext* ctx);
// The text `id` adds after `ctx` on its own (special tokens skipped; bytes of a character it
// only begins or ends become U+FFFD): what logprobs name the token.
std::string TokenText(const Tokenizer& tokenizer, int32_t id, const DecodeContext& ctx);

// Streaming detokenizer. Push(id) returns the newly completed text; it never emits half a UTF-8
// character (the bytes of an incomplete character are held back until complete). Flush()
// returns what is left (incomplete bytes as U+FFFD). Concatenating all outputs of Push and Flush
// equals tokenizer.Decode(all ids, skip_special). The tokenizer must outlive the decoder.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special = true);

  // Decodes what follows `context` (the prompt of a completion), as Decode(context + ids)
  // would: the first token is not at the start of the text, so it keeps a leading space that
  // SentencePiece strips at the start (or llama2.c after BOS). Before any Push.
  void Continue(const std::vector<int32_t>& context);

  std::string Push(int32_t id);
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  DecodeContext ctx_;
  std::string pending_;  // bytes of a character not yet complete (at most 3)
};

// Writes an HF tokenizer.json (SentencePiece-style BPE with byte_fallback) equivalent to a
// llama2.c tokenizer: the same ids for every text that does not contain the BOS/EOS pieces
// verbatim (HF splits added tokens out of the text; llama2.c does not), and the same decoded
// text. Used by `kvasir convert` (llama2.c model dir -> HF dir).
absl::StatusOr<std::string> ExportHfTokenizerJson(const Tokenizer& llama2c_tokenizer);
// A minimal tokenizer_config.json (bos/eos/unk tokens, add_bos_token) for the same tokenizer.
absl::StatusOr<std::string> ExportHfTokenizerConfigJson(const Tokenizer& llama2c_tokenizer);

}  // namespace kvasir
