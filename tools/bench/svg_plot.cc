#include "tools/bench/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvasir::bench {
namespace {

constexpr int kPanelW = 420;
constexpr int kPanelH = 290;
constexpr int kMarginL = 60, kMarginR = 20, kMarginT = 34, kMarginB = 44;

struct Series {
  std::vector<std::pair<double, double>> points;
  bool step = false;  // draw as a step function (CDF)
};

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

// A "nice" tick step for the range [0, hi].
double NiceStep(double hi) {
  if (hi <= 0) return 1;
  const double raw = hi / 5;
  const double mag = std::pow(10, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (raw <= m * mag) return m * mag;
  }
  return 10 * mag;
}

std::string TickLabel(double v) {
  if (v == 0) return "0";
  if (std::fabs(v) >= 100) return absl::StrFormat("%.0f", v);
  if (std::fabs(v) >= 1) return absl::StrFormat("%.3g", v);
  return absl::StrFormat("%.2g", v);
}

std::string Panel(int ox, int oy, const std::string& title, const std::string& xlabel,
                  const std::string& ylabel, const Series& s, const char* color,
                  double ymax_fixed) {
  std::string out;
  const int pw = kPanelW - kMarginL - kMarginR;
  const int ph = kPanelH - kMarginT - kMarginB;
  const int x0 = ox + kMarginL, y0 = oy + kMarginT;
  absl::StrAppendFormat(&out, "<g>\n<text x=\"%d\" y=\"%d\" class=\"title\">%s</text>\n",
                        ox + kPanelW / 2, oy + 20, Escape(title));
  double xmax = 0, ymax = ymax_fixed;
  for (const auto& [x, y] : s.points) {
    xmax = std::max(xmax, x);
    if (ymax_fixed <= 0) ymax = std::max(ymax, y);
  }
  const double xstep = NiceStep(xmax), ystep = NiceStep(ymax);
  xmax = std::max(xstep, std::ceil(xmax / xstep) * xstep);
  ymax = std::max(ystep, std::ceil(ymax / ystep - 1e-9) * ystep);
  auto X = [&](double x) { return x0 + x / xmax * pw; };
  auto Y = [&](double y) { return y0 + ph - y / ymax * ph; };
  absl::StrAppendFormat(&out,
                        "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"frame\"/>\n",
                        x0, y0, pw, ph);
  for (double v = 0; v <= xmax + xstep / 2; v += xstep) {
    absl::StrAppendFormat(&out,
                          "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"grid\"/>"
                          "<text x=\"%.1f\" y=\"%d\" class=\"tick\">%s</text>\n",
                          X(v), y0, X(v), y0 + ph, X(v), y0 + ph + 14, TickLabel(v));
  }
  for (double v = 0; v <= ymax + ystep / 2; v += ystep) {
    absl::StrAppendFormat(&out,
                          "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"grid\"/>"
                          "<text x=\"%d\" y=\"%.1f\" class=\"ytick\">%s</text>\n",
                          x0, Y(v), x0 + pw, Y(v), x0 - 5, Y(v) + 4, TickLabel(v));
  }
  absl::StrAppendFormat(&out, "<text x=\"%d\" y=\"%d\" class=\"label\">%s</text>\n", x0 + pw / 2,
                        y0 + ph + 32, Escape(xlabel));
  absl::StrAppendFormat(&out,
                        "<text x=\"%d\" y=\"%d\" class=\"label\" transform=\"rotate(-90 %d %d)\">"
                        "%s</text>\n",
                        ox + 14, y0 + ph / 2, ox + 14, y0 + ph / 2, Escape(ylabel));
  if (s.points.empty()) {
    absl::StrAppendFormat(&out, "<text x=\"%d\" y=\"%d\" class=\"label\">no data</text>\n",
                          x0 + pw / 2, y0 + ph / 2);
  } else {
    out += absl::StrFormat("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" points=\"",
                           color);
    double prev_y = 0;
    bool first = true;
    for (const auto& [x, y] : s.points) {
      if (s.step && !first) absl::StrAppendFormat(&out, "%.1f,%.1f ", X(x), Y(prev_y));
      absl::StrAppendFormat(&out, "%.1f,%.1f ", X(x), Y(y));
      prev_y = y;
      first = false;
    }
    out += "\"/>\n";
  }
  out += "</g>\n";
  return out;
}

// Empirical CDF of `seconds`, in ms; at most ~1000 points so big runs stay small.
Series Cdf(std::vector<double> seconds) {
  Series s;
  s.step = true;
  std::sort(seconds.begin(), seconds.end());
  const size_t n = seconds.size();
  if (n == 0) return s;
  s.points.emplace_back(seconds.front() * 1000.0, 0.0);
  const size_t stride = std::max<size_t>(1, n / 1000);
  for (size_t i = 0; i < n; i += stride) {
    s.points.emplace_back(seconds[i] * 1000.0, static_cast<double>(i + 1) / n);
  }
  s.points.emplace_back(seconds.back() * 1000.0, 1.0);
  return s;
}

Series OverTime(const std::vector<double>& per_second) {
  Series s;
  for (size_t i = 0; i < per_second.size(); ++i) {
    s.points.emplace_back(static_cast<double>(i), per_second[i]);
    s.points.emplace_back(static_cast<double>(i + 1), per_second[i]);
  }
  return s;
}

}  // namespace

std::string RenderPlotSvg(const BenchmarkMetrics& m, const std::string& title) {
  const int w = 3 * kPanelW, h = 2 * kPanelH + 40;
  std::string out = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
      "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n"
      "<style>.title{font-size:14px;font-weight:bold;text-anchor:middle}"
      ".label{font-size:12px;text-anchor:middle}.tick{font-size:10px;text-anchor:middle}"
      ".ytick{font-size:10px;text-anchor:end}.frame{fill:#fff;stroke:#444}"
      ".grid{stroke:#ddd;stroke-width:0.8}</style>\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"#fafafa\"/>\n"
      "<text x=\"%d\" y=\"24\" class=\"title\" style=\"font-size:16px\">%s</text>\n",
      w, h, w, h, w / 2, Escape(title));
  const int top = 36;
  out += Panel(0, top, "TTFT CDF", "Time to first token (ms)", "fraction of requests", Cdf(m.ttfts),
               "#1f77b4", 1.0);
  out += Panel(kPanelW, top, "TPOT CDF", "Time per output token (ms)", "fraction of requests",
               Cdf(m.tpots), "#ff7f0e", 1.0);
  out += Panel(2 * kPanelW, top, "ITL CDF", "Inter-token latency (ms)", "fraction of gaps",
               Cdf(m.itls), "#2ca02c", 1.0);
  out += Panel(0, top + kPanelH, "E2EL CDF", "End-to-end latency (ms)", "fraction of requests",
               Cdf(m.e2els), "#d62728", 1.0);
  out += Panel(kPanelW, top + kPanelH, "Output throughput", "time since first request (s)",
               "output tokens/s", OverTime(m.tokens_per_second), "#9467bd", 0);
  out += Panel(2 * kPanelW, top + kPanelH, "Concurrency", "time since first request (s)",
               "requests in flight", OverTime(m.concurrent_requests_per_second), "#8c564b", 0);
  out += "</svg>\n";
  return out;
}

absl::Status WritePlot(const BenchmarkMetrics& m, const std::string& title,
                       const std::string& path) {
  std::string doc = RenderPlotSvg(m, title);
  if (path.size() >= 5 && path.substr(path.size() - 5) == ".html") {
    doc = absl::StrCat("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>",
                       Escape(title), "</title></head>\n<body>\n", doc, "</body></html>\n");
  }
  std::ofstream f(path, std::ios::binary);
  if (!f) return absl::UnavailableError(absl::StrCat("cannot write plot ", path));
  f << doc;
  if (!f) return absl::UnavailableError(absl::StrCat("error writing plot ", path));
  return absl::OkStatus();
}

}  // namespace kvasir::bench
