#include "scheduler/admission.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvasir::sched {
namespace {

using ::testing::HasSubstr;

AdmissionConfig Config(int32_t max_outstanding, int64_t max_len) {
  AdmissionConfig c;
  c.max_outstanding = max_outstanding;
  c.max_model_len = max_len;
  c.retry_after = absl::Seconds(2);
  return c;
}

TEST(AdmissionTest, AdmitsUpToTheBoundThenRejectsWith429) {
  AdmissionController a(Config(2, 0));
  EXPECT_TRUE(a.TryAdmit(10, 10, 1).admitted());
  EXPECT_TRUE(a.TryAdmit(10, 10, 1).admitted());
  EXPECT_EQ(a.num_outstanding(), 2);
  AdmissionDecision d = a.TryAdmit(10, 10, 1);
  EXPECT_EQ(d.verdict, AdmissionVerdict::kRejectQueueFull);
  EXPECT_EQ(d.http_status(), 429);
  EXPECT_EQ(d.ToStatus().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(d.retry_after, absl::Seconds(2));
  EXPECT_THAT(d.message, HasSubstr("2 requests in flight"));
  EXPECT_EQ(a.num_outstanding(), 2);  // a refusal takes no slot
  a.Release();
  EXPECT_TRUE(a.TryAdmit(10, 10, 1).admitted());
  EXPECT_EQ(a.num_admitted_total(), 3);
  EXPECT_EQ(a.num_rejected_total(AdmissionVerdict::kRejectQueueFull), 1);
}

TEST(AdmissionTest, NoHealthyWorkerIs503) {
  AdmissionController a(Config(4, 0));
  AdmissionDecision d = a.TryAdmit(10, 10, 0);
  EXPECT_EQ(d.verdict, AdmissionVerdict::kRejectUnavailable);
  EXPECT_EQ(d.http_status(), 503);
  EXPECT_EQ(d.ToStatus().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(d.retry_after, absl::Seconds(2));
  EXPECT_EQ(a.num_outstanding(), 0);
}

TEST(AdmissionTest, TooLongIs400EvenWhenFullOrUnavailable) {
  AdmissionController a(Config(0, 100));  // nothing fits the queue either
  AdmissionDecision d = a.TryAdmit(90, 11, 0);
  EXPECT_EQ(d.verdict, AdmissionVerdict::kRejectTooLong);
  EXPECT_EQ(d.http_status(), 400);
  EXPECT_EQ(d.ToStatus().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(d.retry_after, absl::ZeroDuration());
  EXPECT_THAT(d.message, HasSubstr("maximum context length is 100 tokens, but 101 tokens"));
  EXPECT_EQ(a.TryAdmit(90, 10, 1).verdict, AdmissionVerdict::kRejectQueueFull);  // fits: 429
  EXPECT_STREQ(AdmissionVerdictName(AdmissionVerdict::kRejectTooLong), "too_long");
}

}  // namespace
}  // namespace kvasir::sched
