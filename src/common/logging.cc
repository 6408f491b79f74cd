#include "common/logging.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "spdlog/sinks/stdout_color_sinks.h"

namespace kvasir {

void InitLogging(std::string_view level) {
  std::string lvl(level);
  if (lvl.empty()) {
    const char* env = std::getenv("KVASIR_LOG_LEVEL");
    lvl = env ? env : "warn";
  }
  auto logger = spdlog::stderr_color_mt("kvasir");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(lvl));
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
}

namespace internal {
void CheckFailed(const char* cond, const char* file, int line) {
  std::fprintf(stderr, "CHECK failed: %s at %s:%d\n", cond, file, line);
  std::fflush(stderr);
  std::abort();
}
}  // namespace internal

}  // namespace kvasir
