// Reader and writer of the safetensors format:
//   file   := u64le header_len, header (JSON, header_len bytes), data
//   header := { name: {"dtype": "F32"|"F16"|"BF16"|..., "shape": [..], "data_offsets": [b, e]},
//               "__metadata__": {str: str} }
// Offsets are relative to the start of data; every tensor must lie inside the file and its
// byte size must equal prod(shape) * dtype size.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/mapped_file.h"
#include "common/status.h"

namespace kvasir {

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data;  // points into the mapped file
  size_t nbytes;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps the file and validates the header against the file size.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const TensorView* Find(const std::string& name) const;
  const std::string& path() const { return file_->path(); }

 private:
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
};

// Writes tensors (fp32 data, stored as `dtype`) into one safetensors file.
struct TensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;  // [prod(shape)]
};
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              DType dtype);

}  // namespace kvasir
