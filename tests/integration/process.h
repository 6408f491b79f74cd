// Runs a child process with given stdin and captures its stdout, stderr and exit status.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace kvasir::testing {

struct ProcessResult {
  int exit_code = -1;   // exit status, or -1 when killed by a signal
  int signal = 0;       // terminating signal, 0 if it exited
  std::string out, err;
};

// argv[0] is the program path. env entries are added to (or override) the current environment.
ProcessResult RunProcess(const std::vector<std::string>& argv, const std::string& stdin_data = "",
                         const std::map<std::string, std::string>& env = {});

// Starts argv (argv[0] the program) with its stdout on a pipe, reads `port_lines` lines of it
// as integers (the ports a server prints when it is listening) into *ports, and leaves the
// process running. Returns its pid (-1 if it could not start).
int SpawnServer(const std::vector<std::string>& argv, int port_lines, std::vector<int>* ports);

// $KVASIR_BIN_DIR/name (set by ctest), else build/bin/name.
std::string BinaryPath(const std::string& name);

}  // namespace kvasir::testing
