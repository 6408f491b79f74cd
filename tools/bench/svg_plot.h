// Writes the run as a picture: CDFs of TTFT, TPOT, ITL and E2EL, output tokens per second and
// concurrent requests over time. Plain SVG (or SVG inside an .html page), no dependencies.
#pragma once

#include <string>

#include "common/status.h"
#include "tools/bench/metrics.h"

namespace kvasir::bench {

// The SVG document for `m` (its raw ttfts/tpots/itls/e2els and per-second series).
std::string RenderPlotSvg(const BenchmarkMetrics& m, const std::string& title);

// Writes RenderPlotSvg to `path`; a path ending in .html gets an HTML page around the SVG.
absl::Status WritePlot(const BenchmarkMetrics& m, const std::string& title,
                       const std::string& path);

}  // namespace kvasir::bench
