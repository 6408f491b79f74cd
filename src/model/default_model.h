// Finds the embedded default model (stories260K, llama2.c format) or fetches it.
//
// Search order: $KVASIR_MODEL_DIR; `shared/models/stories260K` in any ancestor of the working
// directory or of the executable (the checkout's ../shared); the user cache
// ($XDG_CACHE_HOME or ~/.cache)/kvasir/models/stories260K. When none has it, the files are
// downloaded from the model's public source (karpathy/tinyllamas on Hugging Face) into the
// cache and checked against their SHA-256 before use.
#pragma once

#include <string>

#include "common/status.h"

namespace kvasir {

inline constexpr char kDefaultModelName[] = "stories260K";

absl::StatusOr<std::string> FindOrFetchDefaultModel();

// SHA-256 of a file, lower-case hex.
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace kvasir
