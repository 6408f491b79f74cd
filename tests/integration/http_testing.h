// HTTP helpers shared by the integration tests that talk to a real Kvasir front end.
#pragma once

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace kvasir::testing {

inline httplib::Client HttpClient(int port) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(120, 0);
  return c;
}

// POSTs a JSON body; returns the parsed JSON reply (status in *status).
inline nlohmann::json PostJson(int port, const std::string& path, const std::string& body,
                               int* status = nullptr, httplib::Headers headers = {}) {
  auto r = HttpClient(port).Post(path, headers, body, "application/json");
  if (!r) {
    ADD_FAILURE() << "no response for " << body;
    return {};
  }
  if (status) *status = r->status;
  nlohmann::json j = nlohmann::json::parse(r->body, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r->body;
  return j;
}

// Reads an SSE stream; returns the parsed data events (without [DONE]) and whether [DONE] came.
inline std::vector<nlohmann::json> StreamSse(int port, const std::string& path,
                                             const std::string& body, bool* done) {
  *done = false;
  auto r = HttpClient(port).Post(path, {}, body, "application/json");
  EXPECT_TRUE(r);
  std::vector<nlohmann::json> events;
  if (!r) return events;
  EXPECT_EQ(r->status, 200) << r->body;
  size_t pos = 0;
  while (true) {
    size_t end = r->body.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string ev = r->body.substr(pos, end - pos);
    pos = end + 2;
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    std::string data = ev.substr(6);
    if (data == "[DONE]") {
      *done = true;
      continue;
    }
    events.push_back(nlohmann::json::parse(data));
  }
  return events;
}

// Opens a raw TCP connection to 127.0.0.1:port and writes a POST of `body` to `path`, so the
// test controls exactly when the connection goes away. Returns the socket (-1 on failure).
inline int RawPost(int port, const std::string& path, const std::string& body) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  const std::string req = "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: " +
                          "application/json\r\nContent-Length: " + std::to_string(body.size()) +
                          "\r\n\r\n" + body;
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return -1;
  }
  return fd;
}

// kvasir:kv_cache_blocks_used from /metrics (-1 when unreadable).
inline int64_t KvBlocksUsed(int port, const std::string& model = "stories260K") {
  auto m = HttpClient(port).Get("/metrics");
  if (!m) return -1;
  const std::string key = "kvasir:kv_cache_blocks_used{model_name=\"" + model + "\"} ";
  size_t p = m->body.find(key);
  return p == std::string::npos ? -1 : std::atoll(m->body.c_str() + p + key.size());
}

}  // namespace kvasir::testing
