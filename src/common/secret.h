// Secrets (the API key, the cluster secret): where they come from and how they are compared.
//
// A secret given on the command line is visible to every user of the host in `ps`, so each
// secret can also come from a file (`--api-key-file F`) or an environment variable
// (`KVASIR_API_KEY`); `kvasir cluster` hands its children theirs through the environment.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace kvasir {

// True when `a == b`. The time taken depends on neither value nor on where they differ (both
// are hashed with SHA-256 first, then the digests compared with CRYPTO_memcmp), so a client
// cannot find a key byte by byte by timing its rejections.
bool SecretEquals(std::string_view a, std::string_view b);

// 32 bytes from OpenSSL's CSPRNG, as 64 hex digits.
absl::StatusOr<std::string> RandomSecret();

// The secret from the first of: `flag_value` (given on the command line), the file
// `file_path` (its content with one trailing newline removed), the environment variable
// `env_name`. Empty when none is set. A file that cannot be read, or that is empty, is an
// error naming `what` ("API key", "cluster secret").
absl::StatusOr<std::string> ResolveSecret(const std::string& what, const std::string& flag_value,
                                          const std::string& file_path, const char* env_name);

// The header value "Bearer SECRET" carries.
inline constexpr std::string_view kBearerPrefix = "Bearer ";

// True when `header` is "Bearer " + `secret` (constant-time in the secret).
bool BearerMatches(std::string_view header, std::string_view secret);

}  // namespace kvasir
