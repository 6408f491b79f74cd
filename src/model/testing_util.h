// Test helpers: locating the shared stories260K model, temporary directories.
#pragma once

#include <filesystem>
#include <string>

namespace kvasir::testing {

// ../shared/models/stories260K relative to the source root (tests run from there).
inline std::string Stories260KDir() {
  namespace fs = std::filesystem;
  for (fs::path p = fs::current_path(); !p.empty(); p = p.parent_path()) {
    fs::path c = p / "shared" / "models" / "stories260K";
    if (fs::exists(c / "model.bin")) return c.string();
    if (p == p.parent_path()) break;
  }
  return "";
}

// A fresh empty directory under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    namespace fs = std::filesystem;
    std::string tmpl = (fs::temp_directory_path() / "kvasir-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace kvasir::testing
