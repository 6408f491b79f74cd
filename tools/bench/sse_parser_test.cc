#include "tools/bench/sse_parser.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kvasir::bench {
namespace {

using ::testing::ElementsAre;

TEST(SseParserTest, SplitsEventsAcrossArbitraryPieces) {
  const std::string stream =
      "data: {\"a\":1}\n\n: ping\n\ndata: {\"b\":2}\r\n\r\nevent: x\ndata: [DONE]\n\n";
  // Every way of cutting the stream in two gives the same events.
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    SseParser p;
    std::vector<std::string> got = p.Feed(stream.substr(0, cut));
    for (auto& e : p.Feed(stream.substr(cut))) got.push_back(e);
    for (auto& e : p.Finish()) got.push_back(e);
    EXPECT_THAT(got, ElementsAre("{\"a\":1}", "{\"b\":2}", "[DONE]")) << "cut at " << cut;
  }
}

TEST(SseParserTest, ByteByByte) {
  const std::string stream = "data: one\n\ndata: two\r\n\r\n";
  SseParser p;
  std::vector<std::string> got;
  for (char c : stream) {
    for (auto& e : p.Feed(std::string(1, c))) got.push_back(e);
  }
  EXPECT_THAT(got, ElementsAre("one", "two"));
  EXPECT_EQ(p.buffered(), 0u);
}

TEST(SseParserTest, MultiLineDataAndNoSpace) {
  SseParser p;
  EXPECT_THAT(p.Feed("data:a\ndata: b\n\n"), ElementsAre("a\nb"));
}

TEST(SseParserTest, CommentsAndEmptyEventsAreSkipped) {
  SseParser p;
  EXPECT_TRUE(p.Feed(": keep-alive\n\n\n\nid: 3\n\n").empty());
}

TEST(SseParserTest, FinishFlushesUnterminatedEvent) {
  SseParser p;
  EXPECT_TRUE(p.Feed("data: [DONE]").empty());
  EXPECT_THAT(p.Finish(), ElementsAre("[DONE]"));
}

}  // namespace
}  // namespace kvasir::bench
