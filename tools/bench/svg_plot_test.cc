#include "tools/bench/svg_plot.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace kvasir::bench {
namespace {

BenchmarkMetrics Sample() {
  BenchmarkMetrics m;
  m.ttfts = {0.1, 0.2, 0.15};
  m.tpots = {0.01, 0.02};
  m.itls = {0.01, 0.011, 0.03};
  m.e2els = {0.5, 0.7, 0.6};
  m.tokens_per_second = {10, 30, 5};
  m.concurrent_requests_per_second = {2, 3, 1};
  return m;
}

TEST(SvgPlotTest, DrawsSixPanels) {
  const std::string svg = RenderPlotSvg(Sample(), "run <1>");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  size_t polylines = 0;
  for (size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1)) {
    ++polylines;
  }
  EXPECT_EQ(polylines, 6u);
  EXPECT_NE(svg.find("TTFT CDF"), std::string::npos);
  EXPECT_NE(svg.find("run &lt;1&gt;"), std::string::npos);  // escaped title
}

TEST(SvgPlotTest, EmptyRunStillRenders) {
  const std::string svg = RenderPlotSvg(BenchmarkMetrics{}, "empty");
  EXPECT_NE(svg.find("no data"), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
}

TEST(SvgPlotTest, HtmlWrapper) {
  const auto path = std::filesystem::temp_directory_path() / "kvasir_bench_plot_test.html";
  ASSERT_TRUE(WritePlot(Sample(), "t", path.string()).ok());
  std::stringstream ss;
  ss << std::ifstream(path).rdbuf();
  EXPECT_EQ(ss.str().rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(ss.str().find("<svg"), std::string::npos);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace kvasir::bench
