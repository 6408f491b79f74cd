#include <variant>

#include "api/chat_template.h"
#include "api/openai_types.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace kvasir::api {
namespace {

CompletionRequest Ok(const std::string& body, Endpoint e = Endpoint::kCompletions) {
  auto r = ParseCompletionRequest(body, e);
  if (auto* err = std::get_if<ApiError>(&r)) {
    ADD_FAILURE() << body << " -> " << err->message;
    return {};
  }
  return std::get<CompletionRequest>(r);
}

ApiError Err(const std::string& body, Endpoint e = Endpoint::kCompletions) {
  auto r = ParseCompletionRequest(body, e);
  if (!std::holds_alternative<ApiError>(r)) {
    ADD_FAILURE() << body << " was accepted";
    return {};
  }
  return std::get<ApiError>(r);
}

TEST(ParseCompletion, FullRequest) {
  auto r = Ok(R"({"model": "m", "prompt": "Once", "max_tokens": 7, "temperature": 0.5,
                  "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": -3, "stop": ["\n", "x"],
                  "stream": true, "stream_options": {"include_usage": true}, "logprobs": 2,
                  "ignore_eos": true, "repetition_penalty": 1.1, "stop_token_ids": [5],
                  "presence_penalty": 0.5, "frequency_penalty": -0.5, "n": 1, "echo": false})");
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(*r.prompt_text, "Once");
  EXPECT_EQ(r.params.max_tokens, 7);
  EXPECT_TRUE(r.max_tokens_given);
  EXPECT_FLOAT_EQ(r.params.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.params.top_p, 0.9f);
  EXPECT_EQ(r.params.top_k, 40);
  EXPECT_FLOAT_EQ(r.params.min_p, 0.05f);
  EXPECT_EQ(*r.params.seed, static_cast<uint64_t>(-3));
  EXPECT_EQ(r.params.stop, (std::vector<std::string>{"\n", "x"}));
  EXPECT_TRUE(r.stream && r.include_usage && r.params.ignore_eos);
  EXPECT_EQ(r.params.logprobs, 2);
  EXPECT_EQ(r.params.stop_token_ids, std::vector<int32_t>{5});
}

// JSON has one number type: integral values written as floats are integers (issue 12).
TEST(ParseCompletion, IntegralFloatsAreIntegers) {
  auto r = Ok(R"({"prompt": "x", "max_tokens": 5.0, "top_k": 4e1, "seed": -2.0, "n": 1.0})");
  EXPECT_EQ(r.params.max_tokens, 5);
  EXPECT_EQ(r.params.top_k, 40);
  EXPECT_EQ(*r.params.seed, static_cast<uint64_t>(-2));
  EXPECT_EQ(Err(R"({"prompt": "x", "max_tokens": 5.5})").param, "max_tokens");
  EXPECT_EQ(Err(R"({"prompt": "x", "max_tokens": 1e300})").param, "max_tokens");
  EXPECT_EQ(Err(R"({"prompt": "x", "seed": 1e30})").param, "seed");
}

TEST(ParseCompletion, PromptForms) {
  EXPECT_EQ(*Ok(R"({"prompt": ["hi"]})").prompt_text, "hi");
  EXPECT_EQ(*Ok(R"({"prompt": [1, 2, 3]})").prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(*Ok(R"({"prompt": [[4, 5]]})").prompt_ids, (std::vector<int32_t>{4, 5}));
  EXPECT_FALSE(Ok(R"({"prompt": "x"})").max_tokens_given);
}

TEST(ParseCompletion, BadRequestsAreClear400s) {
  struct Case {
    const char* body;
    const char* param;
  } cases[] = {
      {R"({"prompt": ""})", "prompt"},
      {R"({"prompt": []})", "prompt"},
      {R"({"prompt": 5})", "prompt"},
      {R"({"prompt": ["a", "b"]})", "prompt"},
      {R"({"prompt": [1, -2]})", "prompt"},
      {R"({"prompt": [1, 1.5]})", "prompt"},
      {R"({"max_tokens": 3})", "prompt"},
      {R"({"prompt": "x", "max_tokens": 0})", "max_tokens"},
      {R"({"prompt": "x", "max_tokens": -5})", "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 99999999999999999999})", "max_tokens"},
      {R"({"prompt": "x", "max_tokens": "10"})", "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 1.5})", "max_tokens"},
      {R"({"prompt": "x", "temperature": -1})", "temperature"},
      {R"({"prompt": "x", "temperature": "hot"})", "temperature"},
      {R"({"prompt": "x", "top_p": 0})", "top_p"},
      {R"({"prompt": "x", "top_p": 1.5})", "top_p"},
      {R"({"prompt": "x", "top_k": -2})", "top_k"},
      {R"({"prompt": "x", "min_p": 2})", "min_p"},
      {R"({"prompt": "x", "presence_penalty": 3})", "presence_penalty"},
      {R"({"prompt": "x", "repetition_penalty": 0})", "repetition_penalty"},
      {R"({"prompt": "x", "stop": 3})", "stop"},
      {R"({"prompt": "x", "stop": [""]})", "stop"},
      {R"({"prompt": "x", "stop_token_ids": [-1]})", "stop_token_ids"},
      {R"({"prompt": "x", "logprobs": 21})", "logprobs"},
      {R"({"prompt": "x", "n": 2})", "n"},
      {R"({"prompt": "x", "stream": "yes"})", "stream"},
      {R"({"prompt": "x", "stream_options": {"include_usage": true}})", "stream_options"},
      {R"({"prompt": "x", "logit_bias": {"5": 10}})", "logit_bias"},
      {R"({"prompt": "x", "model": 7})", "model"},
      {R"({"prompt": "x", "seed": 1.5})", "seed"},
      {R"({"prompt": "x", "kv_policy": "h2o"})", "kv_policy"},
      {R"({"prompt": "x", "kv_policy": 3})", "kv_policy"},
      {R"({"prompt": "x", "kv_budget": 0})", "kv_budget"},
      {R"({"prompt": "x", "kv_budget": -0.5})", "kv_budget"},
      {R"({"prompt": "x", "kv_budget": 2.5})", "kv_budget"},
      {R"({"prompt": "x", "kv_budget": "half"})", "kv_budget"},
  };
  for (const Case& c : cases) {
    ApiError e = Err(c.body);
    EXPECT_EQ(e.http_status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body << " -> " << e.message;
    EXPECT_FALSE(e.message.empty());
  }
  for (const char* body : {"", "{", "[1,2]", "null", "{\"prompt\": NaN}", "{\"prompt\": \"\xff\xfe\"}",
                           "{\"prompt\": \"x\",}",
                           "{\"prompt\": \"x\", \"temperature\": 1e400}"}) {
    ApiError e = Err(body);
    EXPECT_EQ(e.http_status, 400) << body;
    EXPECT_NE(e.message.find("JSON"), std::string::npos) << body << " -> " << e.message;
  }
}

TEST(ParseCompletion, KvPolicyAndBudget) {
  auto v = ParseCompletionRequest(R"({"prompt": "x", "kv_policy": "snapkv", "kv_budget": 0.25})",
                                  Endpoint::kCompletions);
  ASSERT_TRUE(std::holds_alternative<CompletionRequest>(v));
  const CompletionRequest& r = std::get<CompletionRequest>(v);
  EXPECT_EQ(r.kv_policy, KvPolicyKind::kSnapKv);
  EXPECT_EQ(r.kv_budget, 0.25);
  auto t = ParseCompletionRequest(R"({"prompt": "x", "kv_budget": 300})", Endpoint::kCompletions);
  ASSERT_TRUE(std::holds_alternative<CompletionRequest>(t));
  EXPECT_FALSE(std::get<CompletionRequest>(t).kv_policy.has_value());
  EXPECT_EQ(std::get<CompletionRequest>(t).kv_budget, 300.0);
}

TEST(ParseChat, MessagesAndErrors) {
  auto r = Ok(R"({"messages": [{"role": "system", "content": "be brief"},
                               {"role": "user", "content": [{"type": "text", "text": "hi "},
                                                            {"type": "text", "text": "there"}]}],
                  "max_completion_tokens": 9, "logprobs": true, "top_logprobs": 3})",
              Endpoint::kChatCompletions);
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1].content, "hi there");
  EXPECT_EQ(r.params.max_tokens, 9);
  EXPECT_EQ(r.params.logprobs, 3);
  EXPECT_TRUE(r.want_logprobs);
  auto no_top = Ok(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})",
                   Endpoint::kChatCompletions);
  EXPECT_TRUE(no_top.want_logprobs);
  EXPECT_EQ(no_top.params.logprobs, 0);
  EXPECT_EQ(Err(R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})",
                Endpoint::kChatCompletions).param, "top_logprobs");
  EXPECT_TRUE(Ok(R"({"prompt": "x", "logprobs": 0})").want_logprobs);
  EXPECT_FALSE(Ok(R"({"prompt": "x"})").want_logprobs);
  for (const char* body : {R"({"messages": []})", R"({"messages": "hi"})",
                           R"({"messages": [{"content": "x"}]})",
                           R"({"messages": [{"role": "wizard", "content": "x"}]})",
                           R"({"messages": [{"role": "user", "content": 5}]})",
                           R"({"messages": [{"role": "user"}]})", R"({"prompt": "x"})"}) {
    ApiError e = Err(body, Endpoint::kChatCompletions);
    EXPECT_EQ(e.param, "messages") << body << " -> " << e.message;
  }
}

// Regression: GET /%ff put the byte 0xff into the 404 message, and dumping it threw
// nlohmann's type_error 316 out of the HTTP error handler (std::terminate).
TEST(Responses, ErrorsQuotingInvalidUtf8AreValidJson) {
  ApiError e;
  e.http_status = 404;
  e.message = "no route GET /\xff\xfe";
  e.param = "\xc3";
  e.code = "\x80";
  std::string body;
  ASSERT_NO_THROW(body = ErrorJson(e));
  auto j = nlohmann::json::parse(body);
  EXPECT_EQ(j["error"]["message"], "no route GET /\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_TRUE(j["error"]["param"].is_string());
  EXPECT_TRUE(j["error"]["code"].is_string());
}

TEST(Responses, ShapesFollowOpenAI) {
  auto err = nlohmann::json::parse(ErrorJson(BadRequest("bad", "top_p")));
  EXPECT_EQ(err["error"]["message"], "bad");
  EXPECT_EQ(err["error"]["type"], "invalid_request_error");
  EXPECT_EQ(err["error"]["param"], "top_p");
  EXPECT_TRUE(err["error"]["code"].is_null());

  std::string ev = CompletionChunkEvent("cmpl-1", 5, "m", "he\xff", "");
  ASSERT_EQ(ev.rfind("data: ", 0), 0u);
  ASSERT_EQ(ev.substr(ev.size() - 2), "\n\n");
  auto c = nlohmann::json::parse(ev.substr(6));
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][0]["text"], "he\xef\xbf\xbd");  // invalid byte replaced, not a throw
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());

  auto chat = nlohmann::json::parse(ChatChunkEvent("c", 5, "m", "", "", true).substr(6));
  EXPECT_EQ(chat["choices"][0]["delta"]["role"], "assistant");
  auto fin = nlohmann::json::parse(ChatChunkEvent("c", 5, "m", "", "stop", false).substr(6));
  EXPECT_EQ(fin["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(fin["choices"][0]["delta"].contains("content"));

  auto u = nlohmann::json::parse(UsageChunkEvent(Endpoint::kChatCompletions, "c", 5, "m", {3, 4}).substr(6));
  EXPECT_TRUE(u["choices"].empty());
  EXPECT_EQ(u["usage"]["total_tokens"], 7);

  std::vector<TokenLogprobs> lp = {{"a", -0.5f, {{"a", -0.5f}, {"b", -1.5f}}}};
  auto full = nlohmann::json::parse(CompletionResponseJson("x", 1, "m", "a", "length", {2, 1}, &lp));
  EXPECT_EQ(full["choices"][0]["logprobs"]["top_logprobs"][0]["b"], -1.5);
  EXPECT_EQ(full["usage"]["completion_tokens"], 1);
  EXPECT_EQ(full["system_fingerprint"], kSystemFingerprint);
  // text_offset: where each token starts in the returned text (after an echoed prompt of 4).
  std::vector<TokenLogprobs> two = {{" Once", -0.1f, {}}, {" upon", -0.2f, {}}};
  auto echo = nlohmann::json::parse(
      CompletionResponseJson("x", 1, "m", "Hey! Once upon", "length", {2, 2}, &two, 4));
  EXPECT_EQ(echo["choices"][0]["logprobs"]["text_offset"], nlohmann::json::array({4, 9}));
  auto chunk = nlohmann::json::parse(
      CompletionChunkEvent("x", 1, "m", " upon", "", &two, 20).substr(6));
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["text_offset"], nlohmann::json::array({20, 25}));
  // Chat: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}.
  auto chat_full =
      nlohmann::json::parse(ChatResponseJson("c", 1, "m", "a", "length", {2, 1}, &lp));
  const auto& content = chat_full["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 1u);
  EXPECT_EQ(content[0]["token"], "a");
  EXPECT_EQ(content[0]["bytes"], nlohmann::json::array({97}));
  EXPECT_EQ(content[0]["top_logprobs"][1]["token"], "b");
  EXPECT_EQ(content[0]["top_logprobs"][1]["logprob"], -1.5);
  EXPECT_TRUE(nlohmann::json::parse(ChatResponseJson("c", 1, "m", "a", "stop", {2, 1}))
                  ["choices"][0]["logprobs"].is_null());
  auto chat_chunk = nlohmann::json::parse(ChatChunkEvent("c", 1, "m", "a", "", false, &lp).substr(6));
  EXPECT_EQ(chat_chunk["choices"][0]["logprobs"]["content"][0]["logprob"], -0.5);
  EXPECT_EQ(chat_chunk["system_fingerprint"], kSystemFingerprint);
  auto models = nlohmann::json::parse(ModelsJson({"stories260K"}, 1, 512));
  EXPECT_EQ(models["data"][0]["id"], "stories260K");
}

TEST(ChatTemplate, FamiliesFromTokenizerConfig) {
  EXPECT_EQ(DetectChatFormat(R"({"chat_template": "{{ '<|start_header_id|>' }}"})"), ChatFormat::kLlama3);
  EXPECT_EQ(DetectChatFormat(R"({"chat_template": "{{ bos_token + '[INST] ' }}"})"), ChatFormat::kLlama2);
  EXPECT_EQ(DetectChatFormat(R"({"bos_token": "<s>"})"), ChatFormat::kPlain);
  EXPECT_EQ(DetectChatFormat("not json"), ChatFormat::kPlain);
  std::vector<ChatMessage> m = {{"system", "S"}, {"user", "U1"}, {"assistant", "A1"}, {"user", "U2"}};
  EXPECT_EQ(ApplyChatTemplate(ChatFormat::kLlama3, m, true).text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nU2<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(ApplyChatTemplate(ChatFormat::kLlama2, m, true).text,
            "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST]");
  auto plain = ApplyChatTemplate(ChatFormat::kPlain, m, true);
  EXPECT_EQ(plain.text, "system: S\nuser: U1\nassistant: A1\nuser: U2\nassistant:");
  EXPECT_TRUE(plain.add_bos);
}

}  // namespace
}  // namespace kvasir::api
