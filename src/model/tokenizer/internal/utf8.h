// UTF-8 helpers shared by the tokenizers and the incremental decoder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvasir::tokenizer_internal {

// Result of looking at the UTF-8 sequence that starts at some position.
struct Utf8Step {
  enum Kind {
    kChar,        // a complete valid character of `length` bytes
    kInvalid,     // `length` bytes (>= 1) that can never start a valid character: one U+FFFD
    kIncomplete,  // the input ends inside a character that may still become valid
  };
  Kind kind;
  size_t length;
  uint32_t codepoint;  // only for kChar
};

// Examines s[pos..]. Invalid input is cut at the "maximal subpart" (Unicode §3.9, WHATWG): the
// decision for a position depends only on the bytes up to the point where the sequence breaks,
// so replacing while streaming gives the same text as replacing the whole string at once.
Utf8Step NextUtf8(std::string_view s, size_t pos);

// Byte offset of the first invalid or incomplete sequence, or s.size() when all of s is valid.
size_t FirstInvalidUtf8(std::string_view s);

// Replaces every invalid or incomplete sequence with U+FFFD.
std::string SanitizeUtf8(std::string_view s);

// Appends the UTF-8 encoding of `cp` (a valid scalar value).
void AppendUtf8(uint32_t cp, std::string* out);

// Parses a byte-fallback piece "<0xHH>" (either hex case) into its byte.
bool ParseByteToken(std::string_view piece, uint8_t* byte);

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

}  // namespace kvasir::tokenizer_internal
