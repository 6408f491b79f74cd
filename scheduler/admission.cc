#include "scheduler/admission.h"

#include "common/logging.h"

namespace kvasir::sched {

const char* AdmissionVerdictName(AdmissionVerdict v) {
  switch (v) {
    case AdmissionVerdict::kAdmit:
      return "admit";
    case AdmissionVerdict::kRejectQueueFull:
      return "queue_full";
    case AdmissionVerdict::kRejectUnavailable:
      return "unavailable";
    case AdmissionVerdict::kRejectTooLong:
      return "too_long";
  }
  return "unknown";
}

int AdmissionDecision::http_status() const {
  switch (verdict) {
    case AdmissionVerdict::kAdmit:
      return 200;
    case AdmissionVerdict::kRejectQueueFull:
      return 429;
    case AdmissionVerdict::kRejectUnavailable:
      return 503;
    case AdmissionVerdict::kRejectTooLong:
      return 400;
  }
  return 500;
}

absl::Status AdmissionDecision::ToStatus() const {
  switch (verdict) {
    case AdmissionVerdict::kAdmit:
      return absl::OkStatus();
    case AdmissionVerdict::kRejectQueueFull:
      return absl::ResourceExhaustedError(message);
    case AdmissionVerdict::kRejectUnavailable:
      return absl::UnavailableError(message);
    case AdmissionVerdict::kRejectTooLong:
      return absl::InvalidArgumentError(message);
  }
  return absl::InternalError(message);
}

AdmissionController::AdmissionController(const AdmissionConfig& config) : config_(config) {
  KVASIR_CHECK(config.max_outstanding >= 0 && config.max_model_len >= 0);
}

AdmissionDecision AdmissionController::TryAdmit(int64_t prompt_tokens, int64_t max_new_tokens,
                                                int32_t num_healthy_workers) {
  AdmissionDecision d;
  const int64_t total = prompt_tokens + max_new_tokens;
  if (config_.max_model_len > 0 && total > config_.max_model_len) {
    d.verdict = AdmissionVerdict::kRejectTooLong;
    d.message = absl::StrCat("This model's maximum context length is ", config_.max_model_len,
                             " tokens, but ", total, " tokens were requested (", prompt_tokens,
                             " in the prompt, ", max_new_tokens, " to generate)");
  } else if (num_healthy_workers <= 0) {
    d.verdict = AdmissionVerdict::kRejectUnavailable;
    d.message = "no decoder worker is available; retry later";
    d.retry_after = config_.retry_after;
  } else if (outstanding_ >= config_.max_outstanding) {
    d.verdict = AdmissionVerdict::kRejectQueueFull;
    d.message =
        absl::StrCat("server busy: ", outstanding_, " requests in flight (the limit); retry later");
    d.retry_after = config_.retry_after;
  }
  if (d.admitted()) {
    ++outstanding_;
    ++admitted_;
  } else {
    ++rejected_[static_cast<int>(d.verdict)];
  }
  return d;
}

void AdmissionController::Release() {
  KVASIR_CHECK(outstanding_ > 0);
  --outstanding_;
}

int64_t AdmissionController::num_rejected_total(AdmissionVerdict v) const {
  return rejected_[static_cast<int>(v)];
}

}  // namespace kvasir::sched
