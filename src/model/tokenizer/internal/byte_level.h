// GPT-2 byte-to-unicode mapping used by byte-level BPE (Llama 3): printable bytes map to
// themselves, the others to U+0100.. in byte order, so every byte has a visible character.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvasir::tokenizer_internal {

// Codepoint that byte b is written as in byte-level vocab strings.
const std::array<uint32_t, 256>& ByteToUnicode();

// Converts a byte-level vocab string back to raw bytes; false if it has a character outside
// the mapping (such a string is not a byte-level token).
bool ByteLevelToBytes(std::string_view piece, std::string* bytes);

// The byte-level spelling of raw bytes.
std::string BytesToByteLevel(std::string_view bytes);

}  // namespace kvasir::tokenizer_internal
