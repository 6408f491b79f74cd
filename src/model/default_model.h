// Finds the embedded default model (stories260K, llama2.c format) or fetches it.
//
// Search order: $KVASIR_MODEL_DIR; `shared/models/stories260K` in any ancestor of the working
// directory or of the executable (the checkout's ../shared); the user cache
// ($XDG_CACHE_HOME or ~/.cache)/kvasir/models/stories260K. When none has it, the files are
// downloaded from the model's public source (karpathy/tinyllamas on Hugging Face) into the
// cache and checked against their SHA-256 before use.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/status.h"

namespace kvasir {

inline constexpr char kDefaultModelName[] = "stories260K";

// The public source; $KVASIR_MODEL_BASE_URL overrides it (a mirror, or file:// for tests).
inline constexpr char kDefaultModelBaseUrl[] =
    "https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K";

// Where downloaded models live: ($XDG_CACHE_HOME or ~/.cache)/kvasir/models (a temp directory
// when neither is set).
inline std::filesystem::path ModelCacheDir() {
  namespace fs = std::filesystem;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return fs::path(x) / "kvasir" / "models";
  if (const char* h = std::getenv("HOME"); h && *h) return fs::path(h) / ".cache" / "kvasir" / "models";
  return fs::temp_directory_path() / "kvasir-cache" / "models";
}

absl::StatusOr<std::string> FindOrFetchDefaultModel();

// Downloads stories260K.bin and tok512.bin from base_url into dest_dir as model.bin and
// tokenizer.bin, each checked against its SHA-256 before it is moved into place; on any error
// nothing partial is left behind. Returns dest_dir.
absl::StatusOr<std::string> FetchDefaultModel(const std::string& base_url,
                                              const std::string& dest_dir);

// SHA-256 of a file, lower-case hex.
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace kvasir
