#include "model/sampling/stop_string_matcher.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kvasir {
namespace {

// Pushes every piece and returns everything emitted (plus Flush when no stop matched).
struct Streamed {
  std::string text;
  bool stopped = false;
};

Streamed Stream(std::vector<std::string> stops, const std::vector<std::string>& pieces) {
  StopStringMatcher matcher(std::move(stops));
  Streamed out;
  for (const std::string& piece : pieces) {
    const StopStringMatcher::Result r = matcher.Push(piece);
    out.text += r.emit;
    if (r.stopped) {
      out.stopped = true;
      break;
    }
  }
  if (!out.stopped) out.text += matcher.Flush();
  return out;
}

TEST(StopStringMatcherTest, StopSplitAcrossPieces) {
  StopStringMatcher matcher({"o W"});
  StopStringMatcher::Result r = matcher.Push("Hel");
  EXPECT_EQ(r.emit, "Hel");
  EXPECT_FALSE(r.stopped);
  r = matcher.Push("lo W");
  EXPECT_EQ(r.emit, "l");
  EXPECT_TRUE(r.stopped);
  EXPECT_TRUE(matcher.stopped());
  // Everything after the stop is dropped.
  r = matcher.Push("orld");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(matcher.Flush(), "");
}

TEST(StopStringMatcherTest, StopSpreadOverManyPieces) {
  StopStringMatcher matcher({"<|end|>"});
  EXPECT_EQ(matcher.Push("answer <").emit, "answer ");
  EXPECT_EQ(matcher.Push("|en").emit, "");
  const StopStringMatcher::Result r = matcher.Push("d|> trailing");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
}

TEST(StopStringMatcherTest, EarliestStopWins) {
  EXPECT_EQ(Stream({"World", "lo"}, {"Hello World"}).text, "Hel");
  EXPECT_EQ(Stream({"cd", "bcd"}, {"abcde"}).text, "a");
  EXPECT_EQ(Stream({"xyz", "b"}, {"a", "b", "xyz"}).text, "a");
  // Completed in different pushes: the first to complete stops generation.
  const Streamed s = Stream({"yz", "x"}, {"w", "y", "z", "x"});
  EXPECT_EQ(s.text, "w");
  EXPECT_TRUE(s.stopped);
}

TEST(StopStringMatcherTest, PrefixThatDoesNotMatchIsReleased) {
  StopStringMatcher matcher({"o W"});
  StopStringMatcher::Result r = matcher.Push("Hello");
  EXPECT_EQ(r.emit, "Hell");  // "o" could start "o W"
  r = matcher.Push(" ");
  EXPECT_EQ(r.emit, "");  // "o " still could
  r = matcher.Push("there");
  EXPECT_EQ(r.emit, "o there");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(matcher.Flush(), "");
}

TEST(StopStringMatcherTest, OverlappingPrefixKeepsLongestCandidate) {
  // "aab" against "aaab": after "aa" the text "aaa" fails as a whole but its suffix "aa" can
  // still become the stop string.
  StopStringMatcher matcher({"aab"});
  EXPECT_EQ(matcher.Push("aa").emit, "");
  EXPECT_EQ(matcher.Push("a").emit, "a");
  const StopStringMatcher::Result r = matcher.Push("b!");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);
}

TEST(StopStringMatcherTest, FlushReturnsHeldBackText) {
  StopStringMatcher matcher({"END", "STOP"});
  EXPECT_EQ(matcher.Push("the E").emit, "the ");
  EXPECT_EQ(matcher.Push("N").emit, "");
  EXPECT_EQ(matcher.Flush(), "EN");
  EXPECT_EQ(matcher.Flush(), "");
}

TEST(StopStringMatcherTest, NoStopsPassesTextThrough) {
  StopStringMatcher matcher({});
  EXPECT_EQ(matcher.Push("abc").emit, "abc");
  EXPECT_EQ(matcher.Push("").emit, "");
  StopStringMatcher ignores_empty({""});
  EXPECT_EQ(ignores_empty.Push("abc").emit, "abc");
}

TEST(StopStringMatcherTest, Utf8CharactersAreNeverSplit) {
  // "é" = C3 A9 arrives in two byte-level pieces.
  StopStringMatcher matcher({"STOP"});
  EXPECT_EQ(matcher.Push("caf").emit, "caf");
  EXPECT_EQ(matcher.Push("\xC3").emit, "");
  EXPECT_EQ(matcher.Push("\xA9 ok").emit, "\xC3\xA9 ok");
  // A 4-byte emoji (U+1F600 = F0 9F 98 80) one byte at a time.
  EXPECT_EQ(matcher.Push("\xF0").emit, "");
  EXPECT_EQ(matcher.Push("\x9F").emit, "");
  EXPECT_EQ(matcher.Push("\x98").emit, "");
  EXPECT_EQ(matcher.Push("\x80").emit, "\xF0\x9F\x98\x80");
  // Stray continuation bytes (invalid UTF-8) are not held forever.
  EXPECT_EQ(matcher.Push("\x80\x80").emit, "\x80\x80");
}

TEST(StopStringMatcherTest, MultiByteStopStrings) {
  // "日本" = E6 97 A5 E6 9C AC; the second character arrives split.
  StopStringMatcher matcher({"日本"});
  EXPECT_EQ(matcher.Push("今日は日").emit, "今日は");
  EXPECT_EQ(matcher.Push("\xE6\x9C").emit, "");
  const StopStringMatcher::Result r = matcher.Push("\xAC語");
  EXPECT_EQ(r.emit, "");
  EXPECT_TRUE(r.stopped);

  EXPECT_EQ(Stream({"é!"}, {"caf", "é", "!"}).text, "caf");
  EXPECT_EQ(Stream({"é!"}, {"café", " ok"}).text, "café ok");
}

TEST(StopStringMatcherTest, RandomSplitsMatchWholeTextSearch) {
  const std::string texts[] = {
      "The quick brown fox. Jumps over the lazy dog.\n\nUser: hi",
      "ababababc and more",
      "no stop here at all, just text — with ünïcödé ✓",
      "日本語のテキスト。停止：ここで終わり",
  };
  const std::string stops[] = {"\n\nUser:", "ababc", "✓", "停止：", "zzz"};
  std::mt19937 gen(5);
  for (const std::string& text : texts) {
    for (const std::string& stop : stops) {
      const size_t at = text.find(stop);
      const std::string expected = at == std::string::npos ? text : text.substr(0, at);
      for (int trial = 0; trial < 50; ++trial) {
        std::vector<std::string> pieces;
        for (size_t i = 0; i < text.size();) {
          const size_t len = std::uniform_int_distribution<size_t>(1, 4)(gen);
          pieces.push_back(text.substr(i, len));
          i += len;
        }
        const Streamed s = Stream({stop}, pieces);
        EXPECT_EQ(s.text, expected) << "stop " << stop;
        EXPECT_EQ(s.stopped, at != std::string::npos);
      }
    }
  }
}

}  // namespace
}  // namespace kvasir
