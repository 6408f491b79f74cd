#include "tools/bench/token_counter.h"

#include <cctype>

namespace kvasir::bench {
namespace {

class WordCounter final : public TokenCounter {
 public:
  int Count(std::string_view text) const override {
    int n = 0;
    bool in_word = false;
    for (char c : text) {
      const bool space = std::isspace(static_cast<unsigned char>(c)) != 0;
      if (!space && !in_word) ++n;
      in_word = !space;
    }
    return n;
  }
  bool exact() const override { return false; }
  std::string name() const override { return "words (approximate)"; }
};

}  // namespace

std::unique_ptr<TokenCounter> MakeWordCounter() { return std::make_unique<WordCounter>(); }

const std::vector<std::string>& FallbackWords() {
  static const std::vector<std::string>* words = new std::vector<std::string>{
      "the",     "of",      "and",      "to",     "in",     "is",      "was",     "that",
      "for",     "on",      "with",     "as",     "by",     "at",      "from",    "his",
      "her",     "they",    "which",    "an",     "be",     "this",    "had",     "not",
      "are",     "but",     "one",      "all",    "were",   "when",    "we",      "there",
      "can",     "time",    "more",     "about",  "many",   "then",    "them",    "would",
      "like",    "these",   "long",     "make",   "thing",  "see",     "him",     "two",
      "has",     "look",    "day",      "could",  "people", "water",   "number",  "way",
      "part",    "sound",   "place",    "years",  "work",   "know",    "live",    "back",
      "little",  "only",    "round",    "man",    "year",   "came",    "show",    "every",
      "good",    "give",    "our",      "under",  "name",   "very",    "through", "just",
      "form",    "great",   "think",    "say",    "help",   "low",     "line",    "turn",
      "cause",   "much",    "mean",     "before", "move",   "right",   "boy",     "old",
      "too",     "same",    "tell",     "does",   "set",    "three",   "want",    "air",
      "well",    "also",    "play",     "small",  "end",    "put",     "home",    "read",
      "hand",    "port",    "large",    "spell",  "add",    "even",    "land",    "here",
      "must",    "big",     "high",     "such",   "follow", "act",     "why",     "ask",
      "men",     "change",  "went",     "light",  "kind",   "off",     "need",    "house",
      "picture", "try",     "again",    "animal", "point",  "mother",  "world",   "near",
      "build",   "self",    "earth",    "father", "head",   "stand",   "own",     "page",
      "should",  "country", "found",    "answer", "school", "grow",    "study",   "still",
      "learn",   "plant",   "cover",    "food",   "sun",    "four",    "thought", "let",
      "keep",    "eye",     "never",    "last",   "door",   "between", "city",    "tree",
      "cross",   "since",   "hard",     "start",  "might",  "story",   "saw",     "far",
      "sea",     "draw",    "left",     "late",   "run",    "while",   "press",   "close",
      "night",   "real",    "life",     "few",    "stop",   "open",    "seem",    "together",
      "next",    "white",   "children", "begin",  "got",    "walk",    "example", "ease",
      "paper",   "often",   "always",   "music",  "those",  "both",    "mark",    "book",
      "letter",  "until",   "mile",     "river",  "car",    "feet",    "care",    "second",
      "group",   "carry",   "took",     "rain",   "eat",    "room",    "friend",  "began",
      "idea",    "fish",    "mountain", "north",  "once",   "base",    "hear",    "horse",
      "cut",     "sure",    "watch",    "color",  "face",   "wood",    "main",    "enough",
      "plain",   "girl",    "usual",    "young",  "ready",  "above",   "ever",    "red",
      "list",    "though",  "feel",     "talk",   "bird"};
  return *words;
}

}  // namespace kvasir::bench
