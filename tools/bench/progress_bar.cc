#include "tools/bench/progress_bar.h"

#include <string>

#include "tools/bench/http_stream_client.h"

namespace kvasir::bench {
namespace {

std::string Clock(double s) {
  const int t = static_cast<int>(s);
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof(buf), "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%02d:%02d", t / 60, t % 60);
  }
  return buf;
}

}  // namespace

ProgressBar::ProgressBar(int total, bool enabled, std::FILE* out)
    : total_(total), enabled_(enabled), out_(out), start_(MonotonicSeconds()) {
  if (enabled_) Draw(0, start_);
}

void ProgressBar::Update(int done) {
  done_ = done;
  if (!enabled_) return;
  const double now = MonotonicSeconds();
  if (now - last_draw_ >= 0.1 || done == total_) Draw(done, now);
}

void ProgressBar::Finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  if (drawn_ != done_) Draw(done_, MonotonicSeconds());
  std::fputc('\n', out_);
  std::fflush(out_);
}

void ProgressBar::Draw(int done, double now) {
  last_draw_ = now;
  drawn_ = done;
  constexpr int kWidth = 10;
  const double frac = total_ > 0 ? static_cast<double>(done) / total_ : 1.0;
  const int eighths = static_cast<int>(frac * kWidth * 8);
  static const char* const kParts[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
  std::string bar;
  for (int i = 0; i < kWidth; ++i) {
    const int cell = eighths - i * 8;
    bar += cell >= 8 ? "█" : cell > 0 ? kParts[cell] : " ";
  }
  const double elapsed = now - start_;
  const double rate = elapsed > 0 ? done / elapsed : 0;
  const std::string eta = rate > 0 ? Clock((total_ - done) / rate) : "?";
  std::fprintf(out_, "\r%3d%%|%s| %d/%d [%s<%s, %.2fit/s]", static_cast<int>(frac * 100),
               bar.c_str(), done, total_, Clock(elapsed).c_str(), eta.c_str(), rate);
  std::fflush(out_);
}

}  // namespace kvasir::bench
