#include "model/default_model.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include "common/logging.h"

namespace kvasir {

namespace fs = std::filesystem;

namespace {

struct RemoteFile {
  const char* name;    // local file name
  const char* remote;  // file name under the base URL
  const char* sha256;
};

// The same files as ../shared/models/stories260K (see its README): stories260K.bin is the
// legacy-format checkpoint, tok512.bin its 512-token tokenizer.
constexpr RemoteFile kFiles[] = {
    {"model.bin", "stories260K.bin",
     "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"},
    {"tokenizer.bin", "tok512.bin",
     "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312"},
};

bool HasModel(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / "model.bin", ec) && fs::is_regular_file(dir / "tokenizer.bin", ec);
}

fs::path ExecutableDir() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : p.parent_path();
}

size_t WriteToFile(char* ptr, size_t size, size_t nmemb, void* userdata) {
  return std::fwrite(ptr, size, nmemb, static_cast<FILE*>(userdata));
}

absl::Status Download(const std::string& url, const fs::path& dest) {
  FILE* f = std::fopen(dest.c_str(), "wb");
  if (!f) return absl::PermissionDeniedError("cannot write " + dest.string());
  CURL* curl = curl_easy_init();
  if (!curl) {
    std::fclose(f);
    return absl::InternalError("curl_easy_init failed");
  }
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 20L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 300L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, WriteToFile);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, f);
  CURLcode rc = curl_easy_perform(curl);
  curl_easy_cleanup(curl);
  bool closed = std::fclose(f) == 0;
  if (rc != CURLE_OK) {
    return absl::UnavailableError(absl::StrCat("download of ", url, " failed: ", curl_easy_strerror(rc)));
  }
  if (!closed) return absl::DataLossError("cannot write " + dest.string());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> Sha256File(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open " + path);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 16);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    EVP_DigestUpdate(ctx, buf.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(hex[md[i] >> 4]);
    out.push_back(hex[md[i] & 15]);
  }
  return out;
}

absl::StatusOr<std::string> FindOrFetchDefaultModel() {
  if (const char* env = std::getenv("KVASIR_MODEL_DIR"); env && *env) {
    if (HasModel(env)) return std::string(env);
    if (HasModel(fs::path(env) / kDefaultModelName)) return (fs::path(env) / kDefaultModelName).string();
    return absl::NotFoundError(absl::StrCat("$KVASIR_MODEL_DIR=", env, " holds no ",
                                            kDefaultModelName, " model (model.bin + tokenizer.bin)"));
  }
  std::error_code ec;
  for (fs::path start : {fs::current_path(ec), ExecutableDir()}) {
    for (fs::path p = start; !p.empty(); p = p.parent_path()) {
      fs::path cand = p / "shared" / "models" / kDefaultModelName;
      if (HasModel(cand)) return cand.string();
      if (p == p.parent_path()) break;
    }
  }
  fs::path cache = ModelCacheDir() / kDefaultModelName;
  if (HasModel(cache)) return cache.string();
  const char* base = std::getenv("KVASIR_MODEL_BASE_URL");
  return FetchDefaultModel(base && *base ? base : kDefaultModelBaseUrl, cache.string());
}

absl::StatusOr<std::string> FetchDefaultModel(const std::string& base_url,
                                              const std::string& dest_dir) {
  fs::path cache(dest_dir);
  std::error_code ec;
  fs::create_directories(cache, ec);
  if (ec) return absl::PermissionDeniedError("cannot create cache " + cache.string() + ": " + ec.message());
  SPDLOG_WARN("default model {} not found locally; downloading from {} into {}", kDefaultModelName,
              base_url, cache.string());
  curl_global_init(CURL_GLOBAL_DEFAULT);
  for (const RemoteFile& f : kFiles) {
    const std::string url = base_url + "/" + f.remote;
    fs::path tmp = cache / (std::string(f.name) + ".part." + std::to_string(::getpid()));
    absl::Status s = Download(url, tmp);
    if (s.ok()) {
      auto sha = Sha256File(tmp.string());
      if (!sha.ok()) {
        s = sha.status();
      } else if (*sha != f.sha256) {
        s = absl::DataLossError(absl::StrCat("downloaded ", url, " has SHA-256 ", *sha,
                                             ", expected ", f.sha256));
      }
    }
    if (!s.ok()) {
      fs::remove(tmp, ec);
      return s;
    }
    fs::rename(tmp, cache / f.name, ec);
    if (ec) return absl::InternalError("cannot move download into place: " + ec.message());
  }
  return cache.string();
}

}  // namespace kvasir
