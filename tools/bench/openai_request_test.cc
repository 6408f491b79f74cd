#include "tools/bench/openai_request.h"

#include <gtest/gtest.h>

namespace kvasir::bench {
namespace {

TEST(BuildRequestBodyTest, CompletionsMatchesVllmPayload) {
  RequestParams p;
  p.model = "m";
  p.prompt = "hello";
  p.max_tokens = 7;
  p.ignore_eos = true;
  p.extra_body = {{"temperature", 0.0}};
  auto j = nlohmann::json::parse(BuildRequestBody(ApiKind::kCompletions, p));
  EXPECT_EQ(j["model"], "m");
  EXPECT_EQ(j["prompt"], "hello");
  EXPECT_EQ(j["max_tokens"], 7);
  EXPECT_EQ(j["stream"], true);
  EXPECT_EQ(j["stream_options"]["include_usage"], true);
  EXPECT_EQ(j["ignore_eos"], true);
  EXPECT_EQ(j["temperature"], 0.0);
}

TEST(BuildRequestBodyTest, ChatUsesMessages) {
  RequestParams p;
  p.model = "m";
  p.prompt = "hi";
  p.max_tokens = 3;
  auto j = nlohmann::json::parse(BuildRequestBody(ApiKind::kChatCompletions, p));
  EXPECT_EQ(j["messages"][0]["role"], "user");
  EXPECT_EQ(j["messages"][0]["content"], "hi");
  EXPECT_EQ(j["max_completion_tokens"], 3);
  EXPECT_FALSE(j.contains("ignore_eos"));
}

TEST(StreamAccumulatorTest, CompletionsTimingFromChunks) {
  StreamAccumulator acc(ApiKind::kCompletions, /*start_time=*/10.0, /*prompt_len=*/5);
  EXPECT_TRUE(acc.OnMessage(R"({"choices":[{"text":"a "}]})", 10.1));
  EXPECT_TRUE(acc.OnMessage(R"({"choices":[{"text":"b "}]})", 10.13));
  EXPECT_TRUE(acc.OnMessage(R"({"choices":[{"text":"c"}]})", 10.2));
  // The usage chunk (empty choices) is no token: it moves neither ITL nor the end time.
  EXPECT_TRUE(
      acc.OnMessage(R"({"choices":[],"usage":{"prompt_tokens":6,"completion_tokens":3}})", 10.5));
  EXPECT_TRUE(acc.OnMessage("[DONE]", 10.6));
  RequestOutput o = acc.Finish(200, "", "");
  ASSERT_TRUE(o.success) << o.error;
  EXPECT_NEAR(o.ttft, 0.1, 1e-12);
  ASSERT_EQ(o.itl.size(), 2u);
  EXPECT_NEAR(o.itl[0], 0.03, 1e-12);
  EXPECT_NEAR(o.itl[1], 0.07, 1e-12);
  EXPECT_NEAR(o.latency, 0.2, 1e-12);
  EXPECT_EQ(o.output_tokens, 3);
  EXPECT_EQ(o.prompt_len, 6);
  EXPECT_EQ(o.generated_text, "a b c");
}

TEST(StreamAccumulatorTest, ChatRoleChunkCountsForTtft) {
  // vLLM stamps TTFT at the first chunk with non-empty choices, even a role-only delta.
  StreamAccumulator acc(ApiKind::kChatCompletions, 0.0, 1);
  acc.OnMessage(R"({"choices":[{"delta":{"role":"assistant","content":""}}]})", 0.05);
  acc.OnMessage(R"({"choices":[{"delta":{"content":"x"}}]})", 0.08);
  RequestOutput o = acc.Finish(200, "", "");
  ASSERT_TRUE(o.success);
  EXPECT_NEAR(o.ttft, 0.05, 1e-12);
  EXPECT_EQ(o.generated_text, "x");
  EXPECT_EQ(o.output_tokens, 0);
}

TEST(StreamAccumulatorTest, MalformedChunkFails) {
  StreamAccumulator acc(ApiKind::kCompletions, 0.0, 1);
  acc.OnMessage(R"({"choices":[{"text":"a"}]})", 0.1);
  EXPECT_FALSE(acc.OnMessage(R"({"choices": [)", 0.2));
  RequestOutput o = acc.Finish(200, "Failed writing received data", "");
  EXPECT_FALSE(o.success);
  EXPECT_NE(o.error.find("malformed stream chunk"), std::string::npos);
}

TEST(StreamAccumulatorTest, HttpErrorCarriesStatusAndBody) {
  StreamAccumulator acc(ApiKind::kCompletions, 0.0, 1);
  RequestOutput o = acc.Finish(500, "", R"({"error":"x"})");
  EXPECT_FALSE(o.success);
  EXPECT_EQ(o.error, R"(HTTP 500: {"error":"x"})");
}

TEST(StreamAccumulatorTest, ErrorObjectInStreamFails) {
  StreamAccumulator acc(ApiKind::kCompletions, 0.0, 1);
  EXPECT_FALSE(acc.OnMessage(R"({"error":{"message":"overloaded"}})", 0.1));
  EXPECT_NE(acc.Finish(200, "", "").error.find("overloaded"), std::string::npos);
}

TEST(StreamAccumulatorTest, NoChunkMeansFailure) {
  StreamAccumulator acc(ApiKind::kCompletions, 0.0, 1);
  acc.OnMessage("[DONE]", 0.1);
  RequestOutput o = acc.Finish(200, "", "");
  EXPECT_FALSE(o.success);
  EXPECT_NE(o.error.find("Never received a valid chunk"), std::string::npos);
}

TEST(StreamAccumulatorTest, BrokenStreamFails) {
  StreamAccumulator acc(ApiKind::kCompletions, 0.0, 1);
  acc.OnMessage(R"({"choices":[{"text":"a"}]})", 0.1);
  RequestOutput o = acc.Finish(200, "Connection reset by peer", "");
  EXPECT_FALSE(o.success);
  EXPECT_EQ(o.error, "Connection reset by peer");
}

}  // namespace
}  // namespace kvasir::bench
