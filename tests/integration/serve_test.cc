// Starts the real `kvasir serve` process (port 0, readiness by polling /health) and talks
// OpenAI HTTP to it: outputs, streaming, usage, cancellation, metrics, and every error path.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <chrono>
#include <thread>

#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "kvasir/v1/completion.grpc.pb.h"
#include "model/testing_util.h"
#include "nlohmann/json.hpp"
#include "tests/integration/http_testing.h"
#include "tests/integration/process.h"

namespace kvasir {
namespace {

using json = nlohmann::json;

// A `kvasir serve` child process on a free port.
class Server {
 public:
  explicit Server(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {testing::BinaryPath("kvasir"), "serve", "--port", "0",
                                     "--model", testing::Stories260KDir(), "--log-level", "warn"};
    args.insert(args.end(), extra.begin(), extra.end());
    const bool grpc = std::find(extra.begin(), extra.end(), "--grpc-port") != extra.end();
    std::vector<int> ports;
    pid_ = testing::SpawnServer(args, grpc ? 2 : 1, &ports);
    port_ = ports[0];
    if (grpc) grpc_port_ = ports[1];
    EXPECT_GT(port_, 0) << "server did not print its port";
    // Readiness: poll /health with a deadline.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      if (auto r = Client().Get("/health"); r && r->status == 200) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "server not healthy";
  }
  ~Server() {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "server did not exit cleanly: " << status;
  }
  httplib::Client Client() const { return testing::HttpClient(port_); }
  int port() const { return port_; }
  int grpc_port() const { return grpc_port_; }
  bool Alive() const { return kill(pid_, 0) == 0; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  int grpc_port_ = 0;
};

json Post(const Server& s, const std::string& path, const std::string& body, int* status = nullptr,
          httplib::Headers headers = {}) {
  return testing::PostJson(s.port(), path, body, status, std::move(headers));
}

std::vector<json> Stream(const Server& s, const std::string& path, const std::string& body,
                         bool* done) {
  return testing::StreamSse(s.port(), path, body, done);
}

TEST(Serve, GreedyOutputEqualsGenerateAndStreamingAgrees) {
  Server s;
  auto gen = testing::RunProcess({testing::BinaryPath("kvasir"), "generate", "--model",
                                  testing::Stories260KDir(), "--prompt", "Once upon a time",
                                  "--max-tokens", "60", "--temperature", "0"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  std::string expected = gen.out.substr(0, gen.out.size() - 1);  // generate adds a newline
  json j = Post(s, "/v1/completions",
                R"({"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 60, "temperature": 0})");
  EXPECT_EQ(j["choices"][0]["text"], expected);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(j["usage"]["completion_tokens"], 60);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");

  bool done;
  auto events = Stream(s, "/v1/completions",
                       R"({"prompt": "Once upon a time", "max_tokens": 60, "temperature": 0,
                           "stream": true, "stream_options": {"include_usage": true}})", &done);
  ASSERT_TRUE(done);
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) text += events[i]["choices"][0]["text"];
  EXPECT_EQ(text, expected);
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(events.back()["usage"]["completion_tokens"], 60);
  EXPECT_TRUE(events.back()["choices"].empty());
}

TEST(Serve, SixtyFourConcurrentStreamsCompleteWithCorrectUsage) {
  Server s;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 64; ++i) {
    threads.emplace_back([&, i] {
      bool done;
      int max_tokens = 5 + i % 20;
      auto ev = Stream(s, "/v1/completions",
                       json({{"prompt", "Lily and Tom " + std::to_string(i)},
                             {"max_tokens", max_tokens}, {"ignore_eos", true}, {"seed", i},
                             {"stream", true}, {"stream_options", {{"include_usage", true}}}})
                           .dump(),
                       &done);
      if (done && !ev.empty() && ev.back()["usage"]["completion_tokens"] == max_tokens) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 64);
  auto m = s.Client().Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("kvasir:request_success_total{model_name=\"stories260K\",finished_reason=\"length\"} 64"),
            std::string::npos) << m->body;
}

int64_t BlocksUsed(const Server& s) { return testing::KvBlocksUsed(s.port()); }

TEST(Serve, ClientThatDisconnectsCancelsAndFreesKv) {
  Server s;
  std::atomic<int> chunks{0};
  std::atomic<bool> saw_blocks{false};
  std::thread client([&] {
    // A raw socket, so the test controls exactly when the connection goes away.
    const int fd = testing::RawPost(s.port(), "/v1/completions",
                                    R"({"prompt": "Once", "max_tokens": 500, "ignore_eos": true, "stream": true})");
    ASSERT_GE(fd, 0);
    std::string got;
    char buf[4096];
    while (got.find("data: ") == std::string::npos || std::count(got.begin(), got.end(), '\n') < 12) {
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      got.append(buf, n);
    }
    chunks = 5;
    saw_blocks = BlocksUsed(s) > 0;
    close(fd);
  });
  client.join();
  EXPECT_TRUE(saw_blocks.load());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (BlocksUsed(s) != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(BlocksUsed(s), 0);
  auto m = s.Client().Get("/metrics");
  EXPECT_NE(m->body.find("finished_reason=\"abort\"} 1"), std::string::npos) << m->body;
}

TEST(Serve, ErrorsHaveTheRightStatusAndOpenAIShape) {
  Server s({"--api-key", "sekret"});
  httplib::Headers auth = {{"Authorization", "Bearer sekret"}};
  int st = 0;
  json e = Post(s, "/v1/completions", R"({"prompt": "x"})", &st);
  EXPECT_EQ(st, 401);
  EXPECT_EQ(e["error"]["type"], "authentication_error");
  struct Case {
    std::string body;
    int status;
  } cases[] = {
      {"{not json", 400},
      {R"({"prompt": 5})", 400},
      {R"({"prompt": ""})", 400},
      {R"({"prompt": "x", "max_tokens": 100000000000})", 400},
      {R"({"prompt": "x", "max_tokens": 100000})", 400},  // exceeds the context
      {R"({"prompt": "x", "temperature": -1})", 400},
      {R"({"prompt": "x", "top_p": NaN})", 400},
      {R"({"prompt": "x", "top_k": "5"})", 400},
      {"{\"prompt\": \"bad \xff utf8\"}", 400},
      {R"({"prompt": [1, 99999]})", 400},
      {R"({"prompt": "x", "stop_token_ids": [99999]})", 400},
      {R"({"prompt": "x", "model": "other"})", 404},
      {std::string(R"({"prompt": ")") + std::string(3000, 'a') + " b" + R"("})", 400},  // too long
      // 10 MB: refused from its length alone, before tokenizing (issue 12: 2.8 s before).
      {std::string(R"({"prompt": ")") + std::string(10 << 20, 'x') + R"("})", 400},
  };
  for (const Case& c : cases) {
    e = Post(s, "/v1/completions", c.body, &st, auth);
    EXPECT_EQ(st, c.status) << c.body.substr(0, 80) << " -> " << e.dump();
    EXPECT_TRUE(e["error"]["message"].is_string()) << e.dump();
  }
  e = Post(s, "/v1/chat/completions", R"({"messages": []})", &st, auth);
  EXPECT_EQ(st, 400);
  e = Post(s, "/v1/completions", R"({"prompt": "x", "max_tokens": 5.0})", &st, auth);
  EXPECT_EQ(st, 200) << e.dump();  // 5.0 is an integer
  EXPECT_EQ(e["usage"]["completion_tokens"].get<int>() <= 5, true);
  auto r = s.Client().Get("/v1/nothing", auth);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_TRUE(json::parse(r->body)["error"].is_object());
  // Regression: a path that decodes to invalid UTF-8 aborted the process (the 404 body quoted
  // it), with and without a key.
  for (const char* path : {"/%ff", "/v1/%c3%28", "/%ed%a0%80x"}) {
    for (const httplib::Headers& h : {httplib::Headers{}, auth}) {
      r = s.Client().Get(path, h);
      ASSERT_TRUE(r) << path << ": no answer (did the server die?)";
      EXPECT_TRUE(r->status == 404 || r->status == 401) << path << " -> " << r->status;
      EXPECT_TRUE(json::parse(r->body)["error"]["message"].is_string()) << r->body;
    }
  }
  r = s.Client().Post("/%ff", auth, "{}", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_TRUE(s.Alive());
  EXPECT_TRUE(s.Alive());
  // Still serving after all that.
  e = Post(s, "/v1/chat/completions",
           R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})", &st, auth);
  EXPECT_EQ(st, 200) << e.dump();
  EXPECT_EQ(e["usage"]["completion_tokens"].get<int>() <= 3, true);
}

// Issue 12: the first completion token kept no leading space ("...there" + "was a little"),
// so prompt + text was not the decoded whole, echo gave "therewas", and the logprobs tokens
// (vocab pieces) did not join to the text.
TEST(Serve, CompletionTextContinuesThePromptExactly) {
  Server s;
  int st = 0;
  json r = Post(s, "/v1/completions",
                R"({"prompt": "Once upon a time there", "max_tokens": 12, "temperature": 0,
                    "logprobs": 2, "ignore_eos": true})",
                &st);
  ASSERT_EQ(st, 200) << r.dump();
  const std::string text = r["choices"][0]["text"];
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text[0], ' ') << text;  // "... there" + " was ..."
  std::string joined;
  for (const json& t : r["choices"][0]["logprobs"]["tokens"]) joined += t.get<std::string>();
  EXPECT_EQ(joined, text);
  // The same text as decoding prompt + completion ids with the reference tokenizer path.
  auto gen = testing::RunProcess({testing::BinaryPath("kvasir"), "generate", "--model",
                                  testing::Stories260KDir(), "--prompt", "Once upon a time there",
                                  "--max-tokens", "12", "--temperature", "0", "--ignore-eos"});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  EXPECT_EQ(gen.out, text + "\n");
  json e = Post(s, "/v1/completions",
                R"({"prompt": "Once upon a time there", "max_tokens": 12, "temperature": 0,
                    "echo": true, "ignore_eos": true})",
                &st);
  ASSERT_EQ(st, 200);
  EXPECT_EQ(e["choices"][0]["text"], "Once upon a time there" + text);
}

// Chat logprobs (issue 12: `logprobs: true, top_logprobs: 2` came back null), whole and
// streamed: one entry per completion token, 2 alternatives each, joining to the content.
TEST(Serve, ChatLogprobsWithTopAlternatives) {
  Server s;
  const std::string body = R"({"messages": [{"role": "user", "content": "Tell me a story"}],
                              "max_tokens": 8, "temperature": 0, "logprobs": true,
                              "top_logprobs": 2, "ignore_eos": true)";
  int st = 0;
  json r = Post(s, "/v1/chat/completions", body + "}", &st);
  ASSERT_EQ(st, 200) << r.dump();
  const json& content = r["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), r["usage"]["completion_tokens"].get<size_t>()) << r.dump();
  std::string joined;
  for (const json& t : content) {
    joined += t["token"].get<std::string>();
    ASSERT_EQ(t["top_logprobs"].size(), 2u);
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
    // Greedy: the chosen token is the most likely one.
    EXPECT_EQ(t["top_logprobs"][0]["token"], t["token"]);
    EXPECT_GE(t["top_logprobs"][0]["logprob"].get<double>(),
              t["top_logprobs"][1]["logprob"].get<double>());
  }
  EXPECT_EQ(joined, r["choices"][0]["message"]["content"]);
  EXPECT_EQ(r["system_fingerprint"], "fp_kvasir_0.1.0");
  bool done = false;
  std::vector<json> events = Stream(s, "/v1/chat/completions", body + R"(, "stream": true})", &done);
  ASSERT_TRUE(done);
  size_t streamed = 0;
  std::string text;
  for (const json& e : events) {
    const json& c = e["choices"][0];
    if (c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
    if (c["logprobs"].is_object()) streamed += c["logprobs"]["content"].size();
  }
  EXPECT_EQ(streamed, content.size());
  EXPECT_EQ(text, r["choices"][0]["message"]["content"]);
}

// kv_policy end to end: `full` is today's output, a compressed prompt reports fewer KV tokens
// kept (usage.kv_tokens_kept), a bad value is a 400 naming the field, and the server default
// (--kv-policy) applies to requests that name none.
TEST(Serve, KvPolicyFieldsAndUsage) {
  Server s({"--kv-policy", "streaming", "--kv-budget", "0.5"});
  std::string prompt;
  for (int i = 0; i < 12; ++i) prompt += "Once upon a time, there was a little girl named Lily. ";
  auto body = [&](const std::string& extra) {
    return json{{"prompt", prompt}, {"max_tokens", 20}, {"temperature", 0}}.dump().insert(1, extra);
  };
  int status = 0;
  json full = Post(s, "/v1/completions", body(R"("kv_policy": "full",)"), &status);
  ASSERT_EQ(status, 200) << full.dump();
  const int64_t plen = full["usage"]["prompt_tokens"];
  EXPECT_EQ(full["usage"]["kv_tokens_kept"], plen + 20 - 1);
  json dflt = Post(s, "/v1/completions", body(""), &status);
  ASSERT_EQ(status, 200) << dflt.dump();
  EXPECT_LT(dflt["usage"]["kv_tokens_kept"].get<int64_t>(), plen / 2 + 20);
  json task = Post(s, "/v1/completions", body(R"("kv_policy": "taskkv", "kv_budget": 0.3,)"), &status);
  ASSERT_EQ(status, 200) << task.dump();
  EXPECT_LT(task["usage"]["kv_tokens_kept"].get<int64_t>(), plen * 3 / 10 + 20);
  EXPECT_EQ(task["usage"]["completion_tokens"], 20);
  json bad = Post(s, "/v1/completions", body(R"("kv_policy": "h2o",)"), &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(bad["error"]["param"], "kv_policy");
  bad = Post(s, "/v1/completions", body(R"("kv_budget": 7.5,)"), &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(bad["error"]["param"], "kv_budget");
  // The KV manager's shards do not evict yet: a compressing policy is refused, not ignored.
  Server sharded({"--attention-shards", "1"});
  bad = Post(sharded, "/v1/completions", body(R"("kv_policy": "snapkv",)"), &status);
  EXPECT_EQ(status, 400) << bad.dump();
  EXPECT_NE(bad["error"]["message"].get<std::string>().find("not supported"), std::string::npos);
  EXPECT_EQ(Post(sharded, "/v1/completions", body(R"("kv_policy": "full",)"), &status)["choices"][0]["text"],
            full["choices"][0]["text"]);
  // ... and a server whose default would be refused for every request does not start.
  auto refused = testing::RunProcess({testing::BinaryPath("kvasir"), "serve", "--model",
                                      testing::Stories260KDir(), "--attention-shards", "1",
                                      "--kv-policy", "taskkv", "--port", "0"});
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_NE(refused.err.find("--kv-policy taskkv needs the KV"), std::string::npos) << refused.err;
  // Without a policy, the default server's answer equals the plain one.
  Server plain;
  json p = Post(plain, "/v1/completions", body(""), &status);
  ASSERT_EQ(status, 200);
  EXPECT_EQ(p["choices"][0]["text"], full["choices"][0]["text"]);
}

TEST(Serve, FullQueueIs429) {
  Server s({"--max-num-seqs", "1", "--max-waiting", "1"});
  std::atomic<int> n429{0}, n200{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      int st = 0;
      json e = Post(s, "/v1/completions", R"({"prompt": "Once", "max_tokens": 200, "ignore_eos": true})", &st);
      if (st == 429) {
        ++n429;
        EXPECT_EQ(e["error"]["type"], "rate_limit_error");
      } else if (st == 200) {
        ++n200;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GE(n429.load(), 1);
  EXPECT_GE(n200.load(), 1);
  EXPECT_EQ(n429 + n200, 8);
}

// The gRPC API: health, a streamed Generate equal to the HTTP output, and error statuses.
TEST(Serve, GrpcGenerateHealthAndErrors) {
  Server s({"--grpc-port", "0"});
  ASSERT_GT(s.grpc_port(), 0);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(s.grpc_port()),
                                     grpc::InsecureChannelCredentials());
  {
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status st = health->Check(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  json http = Post(s, "/v1/completions",
                   R"({"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0})");
  auto stub = kvasir::v1::Completion::NewStub(channel);
  auto generate = [&](const kvasir::v1::GenerateRequest& req, std::string* text,
                      kvasir::v1::GenerateResponse* last) {
    grpc::ClientContext ctx;
    auto reader = stub->Generate(&ctx, req);
    kvasir::v1::GenerateResponse msg;
    int n = 0;
    while (reader->Read(&msg)) {
      *text += msg.text();
      *last = msg;
      ++n;
    }
    grpc::Status st = reader->Finish();
    EXPECT_TRUE(n > 0 || !st.ok());
    return st;
  };
  kvasir::v1::GenerateRequest req;
  req.set_prompt("Once upon a time");
  req.mutable_sampling()->set_max_tokens(40);
  req.mutable_sampling()->set_temperature(0);
  std::string text;
  kvasir::v1::GenerateResponse last;
  grpc::Status st = generate(req, &text, &last);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(text, http["choices"][0]["text"]);
  EXPECT_EQ(last.finish_reason(), "length");
  EXPECT_EQ(last.usage().prompt_tokens(), 5);
  EXPECT_EQ(last.usage().completion_tokens(), 40);

  kvasir::v1::GenerateRequest chat;
  auto* m = chat.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("hi");
  chat.mutable_sampling()->set_max_tokens(5);
  text.clear();
  EXPECT_TRUE(generate(chat, &text, &last).ok());
  EXPECT_LE(last.usage().completion_tokens(), 5);

  kvasir::v1::GenerateRequest bad = req;
  bad.mutable_sampling()->set_top_p(0);
  EXPECT_EQ(generate(bad, &text, &last).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  bad = req;
  bad.set_model("nope");
  EXPECT_EQ(generate(bad, &text, &last).error_code(), grpc::StatusCode::NOT_FOUND);
  bad = req;
  bad.mutable_sampling()->set_max_tokens(100000);
  EXPECT_EQ(generate(bad, &text, &last).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  kvasir::v1::GenerateRequest empty;
  EXPECT_EQ(generate(empty, &text, &last).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(s.Alive());
}

// --api-key protects gRPC exactly as HTTP: metadata "authorization: Bearer KEY", else
// UNAUTHENTICATED. Health stays open (as /health on HTTP). The key comes from a file here, so
// it never shows in `ps`.
TEST(Serve, GrpcRequiresTheApiKey) {
  const std::string key_file = ::testing::TempDir() + "/kvasir_serve_test_api_key";
  { std::ofstream(key_file) << "sk-grpc-test\n"; }
  Server s({"--grpc-port", "0", "--api-key-file", key_file});
  ASSERT_GT(s.grpc_port(), 0);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(s.grpc_port()),
                                     grpc::InsecureChannelCredentials());
  {
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckResponse resp;
    EXPECT_TRUE(health->Check(&ctx, {}, &resp).ok());
  }
  auto stub = kvasir::v1::Completion::NewStub(channel);
  kvasir::v1::GenerateRequest req;
  req.set_prompt("Once upon a time");
  req.mutable_sampling()->set_max_tokens(4);
  auto call = [&](const std::string& header, std::string* text) {
    grpc::ClientContext ctx;
    if (!header.empty()) ctx.AddMetadata("authorization", header);
    auto reader = stub->Generate(&ctx, req);
    kvasir::v1::GenerateResponse msg;
    while (reader->Read(&msg)) *text += msg.text();
    return reader->Finish();
  };
  std::string text;
  for (const std::string bad : {"", "Bearer wrong", "Bearer sk-grpc-tes", "sk-grpc-test",
                                "Bearer sk-grpc-test2"}) {
    text.clear();
    grpc::Status st = call(bad, &text);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << "'" << bad << "'";
    EXPECT_EQ(text, "");
  }
  text.clear();
  grpc::Status st = call("Bearer sk-grpc-test", &text);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_FALSE(text.empty());
  // HTTP takes the same key from the same file.
  int status = 0;
  Post(s, "/v1/completions", R"({"prompt": "x", "max_tokens": 1})", &status);
  EXPECT_EQ(status, 401);
  Post(s, "/v1/completions", R"({"prompt": "x", "max_tokens": 1})", &status,
       {{"Authorization", "Bearer sk-grpc-test"}});
  EXPECT_EQ(status, 200);
}

}  // namespace
}  // namespace kvasir
