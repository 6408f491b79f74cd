#include "tools/cli_args.h"

#include <cstdio>

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace kvasir::cli {

absl::StatusOr<Args> Args::Parse(int argc, char** argv, int first,
                                 const std::vector<FlagSpec>& specs) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
      return absl::InvalidArgumentError("unexpected argument '" + arg + "'");
    }
    std::string name = arg.substr(2), value;
    bool has_inline = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_inline = true;
    }
    const FlagSpec* spec = nullptr;
    for (const FlagSpec& s : specs) {
      if (s.name == name) spec = &s;
    }
    if (!spec) return absl::InvalidArgumentError("unknown flag --" + name);
    if (spec->takes_value && !has_inline) {
      if (i + 1 >= argc) return absl::InvalidArgumentError("flag --" + name + " needs a value");
      value = argv[++i];
    } else if (!spec->takes_value && has_inline) {
      return absl::InvalidArgumentError("flag --" + name + " takes no value");
    }
    a.values_[name].push_back(value);
  }
  return a;
}

std::string Args::Str(const std::string& name, const std::string& def) const {
  auto it = values_.find(name);
  return it == values_.end() ? def : it->second.back();
}

std::vector<std::string> Args::All(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

absl::StatusOr<int64_t> Args::Int(const std::string& name, int64_t def) const {
  if (!Has(name)) return def;
  std::string s = Str(name);
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno == ERANGE) {
    return absl::InvalidArgumentError("flag --" + name + ": '" + s + "' is not an integer");
  }
  return static_cast<int64_t>(v);
}

absl::StatusOr<double> Args::Float(const std::string& name, double def) const {
  if (!Has(name)) return def;
  std::string s = Str(name);
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v)) {
    return absl::InvalidArgumentError("flag --" + name + ": '" + s + "' is not a finite number");
  }
  return v;
}

absl::StatusOr<std::optional<uint64_t>> Args::OptionalUint(const std::string& name) const {
  if (!Has(name)) return std::optional<uint64_t>();
  std::string s = Str(name);
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (s.empty() || s[0] == '-' || *end != '\0' || errno == ERANGE) {
    return absl::InvalidArgumentError("flag --" + name + ": '" + s + "' is not a non-negative integer");
  }
  return std::optional<uint64_t>(v);
}

std::string Usage(const std::string& command, const std::vector<FlagSpec>& specs) {
  std::string u = "usage: kvasir " + command + " [flags]\n";
  for (const FlagSpec& s : specs) {
    u += "  --" + s.name + (s.takes_value ? " VALUE" : "") + "\n      " + s.help + "\n";
  }
  return u;
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "kvasir: error: %s\n", std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

std::vector<FlagSpec> With(std::vector<FlagSpec> extra) {
  std::vector<FlagSpec> all = {
      {"model", true, "model directory (HF or llama2.c layout); default: embedded stories260K"},
      {"load-format", true, "auto (default) or dummy (seeded random weights)"},
      {"dummy-config", true, "config for dummy weights: built-in name or config.json path"},
      {"threads", true, "CPU threads (default 2)"},
      {"device", true, "cpu (default: fp32 on the CPU) or cuda (bf16 weights and KV on GPU 0)"},
      {"kv-cache-dtype", true,
       "how KV rows are stored: fp32 or bf16 (default: fp32 on the CPU, bf16 with --device cuda, "
       "whose GPU pool is always bf16)"},
      {"gpu-memory-utilization", true,
       "cuda: fraction of GPU memory for weights + KV pool (default 0.9)"},
      {"no-enable-prefix-caching", false,
       "do not share the KV of equal prompt prefixes between requests (on by default where the "
       "KV is in this process)"},
      {"enable-prefix-caching", false, "share the KV of equal prompt prefixes (the default)"},
      {"log-level", true, "debug, info, warn (default), error"},
      {"help", false, "show this help"},
  };
  all.insert(all.end(), extra.begin(), extra.end());
  return all;
}

}  // namespace kvasir::cli
