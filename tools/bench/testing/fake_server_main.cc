// kvasir-bench-fake-server: the in-test fake OpenAI server as a process, to try kvasir-bench
// (or vllm bench serve) without a model: every request streams max_tokens chunks, the first
// after --ttft-ms, the rest --itl-ms apart.
//   kvasir-bench-fake-server --port-file /tmp/port --ttft-ms 50 --itl-ms 10 [--seconds 60]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "tools/bench/testing/fake_openai_server.h"

int main(int argc, char** argv) {
  double ttft_ms = 50, itl_ms = 10, seconds = 60;
  std::string port_file;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--ttft-ms"))
      ttft_ms = std::atof(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--itl-ms"))
      itl_ms = std::atof(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--seconds"))
      seconds = std::atof(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--port-file"))
      port_file = argv[i + 1];
  }
  kvasir::bench::testing::FakeOpenAiServer server([=](int, const nlohmann::json& body) {
    kvasir::bench::testing::StreamPlan p;
    int max_tokens = 16;
    if (body.is_object()) {
      if (body.contains("max_tokens") && body["max_tokens"].is_number_integer()) {
        max_tokens = body["max_tokens"].get<int>();
      }
    }
    p.first_delay_s = ttft_ms / 1000.0;
    p.gaps_s.assign(std::max(0, max_tokens - 1), itl_ms / 1000.0);
    return p;
  });
  const int port = server.Start();
  std::printf("fake OpenAI server on http://127.0.0.1:%d\n", port);
  std::fflush(stdout);
  if (!port_file.empty()) std::ofstream(port_file) << port;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  server.Stop();
  return 0;
}
