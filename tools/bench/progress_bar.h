// A tqdm-style progress bar on stderr ("  37%|███▋      | 370/1000 [00:05<00:08, 72.1it/s]"),
// redrawn at most every 100 ms so thousands of completions per second cost nothing.
#pragma once

#include <cstdio>

namespace kvasir::bench {

class ProgressBar {
 public:
  ProgressBar(int total, bool enabled, std::FILE* out = stderr);
  void Update(int done);  // `done` requests finished so far
  void Finish();          // final redraw and newline

 private:
  void Draw(int done, double now);

  int total_;
  bool enabled_;
  std::FILE* out_;
  double start_;
  double last_draw_ = -1;
  int done_ = 0;
  int drawn_ = -1;  // `done` at the last redraw
  bool finished_ = false;
};

}  // namespace kvasir::bench
