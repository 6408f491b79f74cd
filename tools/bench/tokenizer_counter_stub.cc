// Built when the Kvasir tokenizer library is not available.
#include "tools/bench/token_counter.h"

namespace kvasir::bench {

absl::StatusOr<std::unique_ptr<TokenCounter>> LoadTokenCounter(const std::string& path) {
  return absl::UnimplementedError(
      "this kvasir-bench was built without the Kvasir tokenizer (src/model/tokenizer); "
      "cannot load --tokenizer " +
      path);
}

}  // namespace kvasir::bench
