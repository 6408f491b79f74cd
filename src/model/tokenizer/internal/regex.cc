#include "model/tokenizer/internal/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "model/tokenizer/internal/utf8.h"

namespace kvasir::tokenizer_internal {
namespace {

std::string PcreErrorMessage(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof(buf)) < 0) return absl::StrCat("error ", code);
  return std::string(reinterpret_cast<const char*>(buf));
}

// One JIT stack per thread, large enough for long whitespace or letter runs.
pcre2_match_context* ThreadMatchContext() {
  struct Holder {
    pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    pcre2_match_context* context = pcre2_match_context_create(nullptr);
    Holder() {
      if (stack != nullptr && context != nullptr) {
        pcre2_jit_stack_assign(context, nullptr, stack);
      }
    }
    ~Holder() {
      pcre2_match_context_free(context);
      pcre2_jit_stack_free(stack);
    }
  };
  thread_local Holder holder;
  return holder.context;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(const std::string& pattern) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad regex '", pattern, "' at offset ", error_offset, ": ", PcreErrorMessage(error_code)));
  }
  auto re = std::unique_ptr<Regex>(new Regex());
  re->pattern_ = pattern;
  re->code_ = code;
  re->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return re;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

absl::StatusOr<std::vector<std::pair<size_t, size_t>>> Regex::FindAll(std::string_view text) const {
  auto* code = static_cast<pcre2_code*>(code_);
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(
      pcre2_match_data_create_from_pattern(code, nullptr), pcre2_match_data_free);
  if (md == nullptr) return absl::ResourceExhaustedError("pcre2_match_data_create failed");
  pcre2_match_context* context = ThreadMatchContext();
  std::vector<std::pair<size_t, size_t>> out;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    const int rc =
        jit_ ? pcre2_jit_match(code, subject, text.size(), pos, 0, md.get(), context)
             : pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md.get(), context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return absl::InternalError(
          absl::StrCat("regex '", pattern_, "' failed: ", PcreErrorMessage(rc)));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const size_t begin = ov[0], end = ov[1];
    if (end > begin) {
      out.emplace_back(begin, end);
      pos = end;
    } else {
      // Empty match: step over one character so the search makes progress.
      if (begin >= text.size()) break;
      pos = begin + NextUtf8(text, begin).length;
    }
  }
  return out;
}

}  // namespace kvasir::tokenizer_internal
