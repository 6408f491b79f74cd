// Minimal command-line parsing for the kvasir subcommands: `--name value`, `--name=value`,
// boolean `--name`, repeated flags. Unknown flags and missing or malformed values are errors.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvasir::cli {

struct FlagSpec {
  std::string name;  // without dashes
  bool takes_value = true;
  std::string help;
};

class Args {
 public:
  // Parses argv[first..argc) against specs; positional arguments are rejected.
  static absl::StatusOr<Args> Parse(int argc, char** argv, int first,
                                    const std::vector<FlagSpec>& specs);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string Str(const std::string& name, const std::string& def = "") const;
  std::vector<std::string> All(const std::string& name) const;
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t def) const;
  absl::StatusOr<double> Float(const std::string& name, double def) const;
  absl::StatusOr<std::optional<uint64_t>> OptionalUint(const std::string& name) const;

 private:
  std::map<std::string, std::vector<std::string>> values_;
};

std::string Usage(const std::string& command, const std::vector<FlagSpec>& specs);

// Prints "kvasir: error: ..." to stderr; returns the exit code (2 for bad arguments, else 1).
int Fail(const absl::Status& s);

// The model flags every model-loading subcommand takes, plus `extra`.
std::vector<FlagSpec> With(std::vector<FlagSpec> extra);

}  // namespace kvasir::cli
