#include "common/secret.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace kvasir {

bool SecretEquals(std::string_view a, std::string_view b) {
  unsigned char da[SHA256_DIGEST_LENGTH], db[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(a.data()), a.size(), da);
  SHA256(reinterpret_cast<const unsigned char*>(b.data()), b.size(), db);
  return CRYPTO_memcmp(da, db, sizeof(da)) == 0;
}

bool BearerMatches(std::string_view header, std::string_view secret) {
  // The prefix is public: comparing it first leaks nothing about the secret.
  if (header.size() < kBearerPrefix.size() ||
      header.substr(0, kBearerPrefix.size()) != kBearerPrefix) {
    // Still hash once, so a missing header costs about what a wrong key does.
    (void)SecretEquals(header, secret);
    return false;
  }
  return SecretEquals(header.substr(kBearerPrefix.size()), secret);
}

absl::StatusOr<std::string> RandomSecret() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    return absl::InternalError("cannot draw a random secret (OpenSSL RAND_bytes failed)");
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

absl::StatusOr<std::string> ResolveSecret(const std::string& what, const std::string& flag_value,
                                          const std::string& file_path, const char* env_name) {
  if (!flag_value.empty()) return flag_value;
  if (!file_path.empty()) {
    std::ifstream in(file_path, std::ios::binary);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read the ", what, " file ", file_path));
    std::ostringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    if (!s.empty() && s.back() == '\n') s.pop_back();
    if (!s.empty() && s.back() == '\r') s.pop_back();
    if (s.empty()) return absl::InvalidArgumentError(absl::StrCat("the ", what, " file ", file_path, " is empty"));
    return s;
  }
  if (env_name != nullptr) {
    if (const char* v = std::getenv(env_name); v != nullptr) return std::string(v);
  }
  return std::string();
}

}  // namespace kvasir
