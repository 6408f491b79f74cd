// Router admission control: a bounded number of requests in the system, a clear refusal
// otherwise. The router asks TryAdmit() for each request after tokenizing it and calls
// Release() when the request leaves (finished, failed or cancelled).
//
// Verdicts map to HTTP: queue full -> 429 (retry later), no healthy worker -> 503, too long ->
// 400 (OpenAI's context_length_exceeded), and to absl codes ResourceExhausted, Unavailable,
// InvalidArgument.
#pragma once

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "common/status.h"

namespace kvasir::sched {

struct AdmissionConfig {
  int32_t max_outstanding = 1024;                 // requests admitted and not yet released
  int64_t max_model_len = 0;                      // limit on prompt + max_new_tokens; 0: none
  absl::Duration retry_after = absl::Seconds(1);  // hint sent with 429 and 503
};

enum class AdmissionVerdict {
  kAdmit,
  kRejectQueueFull,    // 429
  kRejectUnavailable,  // 503
  kRejectTooLong,      // 400
};

struct AdmissionDecision {
  AdmissionVerdict verdict = AdmissionVerdict::kAdmit;
  std::string message;                                // for the client, empty when admitted
  absl::Duration retry_after = absl::ZeroDuration();  // set for 429 and 503

  bool admitted() const { return verdict == AdmissionVerdict::kAdmit; }
  int http_status() const;
  absl::Status ToStatus() const;
};

const char* AdmissionVerdictName(AdmissionVerdict v);

class AdmissionController {
 public:
  explicit AdmissionController(const AdmissionConfig& config);

  // Checks in order: length (the request can never run), workers, queue bound. An admitted
  // request counts as outstanding until Release().
  AdmissionDecision TryAdmit(int64_t prompt_tokens, int64_t max_new_tokens,
                             int32_t num_healthy_workers);
  void Release();

  int32_t num_outstanding() const { return outstanding_; }
  int64_t num_admitted_total() const { return admitted_; }
  int64_t num_rejected_total(AdmissionVerdict v) const;

 private:
  AdmissionConfig config_;
  int32_t outstanding_ = 0;
  int64_t admitted_ = 0;
  int64_t rejected_[4] = {0, 0, 0, 0};
};

}  // namespace kvasir::sched
