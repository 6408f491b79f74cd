// Logging goes to stderr through spdlog, so stdout stays clean for CLI output.
#pragma once

#include <string_view>

#include "spdlog/spdlog.h"

namespace kvasir {

// Configures the default logger: stderr sink, level from `level` ("info", "debug", "warn",
// "error", "off"), falling back to $KVASIR_LOG_LEVEL, then "warn".
void InitLogging(std::string_view level = "");

}  // namespace kvasir

#define KVASIR_CHECK(cond)                                                   \
  do {                                                                       \
    if (!(cond)) ::kvasir::internal::CheckFailed(#cond, __FILE__, __LINE__); \
  } while (0)
#ifdef NDEBUG
#define KVASIR_DCHECK(cond) \
  do {                      \
  } while (0)
#else
#define KVASIR_DCHECK(cond) KVASIR_CHECK(cond)
#endif

namespace kvasir::internal {
[[noreturn]] void CheckFailed(const char* cond, const char* file, int line);
}  // namespace kvasir::internal
