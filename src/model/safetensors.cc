#include "model/safetensors.h"

#include <fstream>
#include <limits>

#include "nlohmann/json.hpp"

namespace kvasir {

using nlohmann::json;

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

const TensorView* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto st = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  ASSIGN_OR_RETURN(st->file_, MappedFile::Open(path));
  const uint8_t* base = st->file_->data();
  const size_t size = st->file_->size();
  auto corrupt = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat("corrupt safetensors file ", path, ": ", why));
  };
  if (size < 8) return corrupt("shorter than its 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
  if (header_len > size - 8) {
    return corrupt(absl::StrCat("header length ", header_len, " exceeds file size ", size));
  }
  const uint8_t* data = base + 8 + header_len;
  const size_t data_size = size - 8 - header_len;
  json h = json::parse(base + 8, base + 8 + header_len, nullptr, /*allow_exceptions=*/false);
  if (h.is_discarded() || !h.is_object()) return corrupt("header is not a JSON object");
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const json& t = it.value();
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") ||
        !t.contains("data_offsets") || !t["dtype"].is_string() || !t["shape"].is_array() ||
        !t["data_offsets"].is_array() || t["data_offsets"].size() != 2) {
      return corrupt("tensor '" + it.key() + "' has a malformed entry");
    }
    auto dtype = ParseDType(t["dtype"].get<std::string>());
    if (!dtype.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", it.key(), "' in ", path, ": ",
                                                     dtype.status().message()));
    }
    TensorView v;
    v.name = it.key();
    v.dtype = *dtype;
    int64_t numel = 1;
    for (const json& d : t["shape"]) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0)) {
        return corrupt("tensor '" + it.key() + "' has a bad shape");
      }
      int64_t s = d.get<int64_t>();
      if (s != 0 && numel > std::numeric_limits<int64_t>::max() / s / 4) {
        return corrupt("tensor '" + it.key() + "' shape overflows");
      }
      numel *= s;
      v.shape.push_back(s);
    }
    const json& off = t["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return corrupt("tensor '" + it.key() + "' has bad data_offsets");
    }
    uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e || e > data_size) {
      return corrupt(absl::StrCat("tensor '", it.key(), "' data [", b, ", ", e,
                                  ") lies outside the file's ", data_size, " data bytes (truncated?)"));
    }
    if (e - b != static_cast<uint64_t>(numel) * DTypeSize(v.dtype)) {
      return corrupt(absl::StrCat("tensor '", it.key(), "' holds ", e - b, " bytes but its shape needs ",
                                  numel * DTypeSize(v.dtype)));
    }
    v.data = data + b;
    v.nbytes = e - b;
    st->tensors_.emplace(v.name, std::move(v));
  }
  return st;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              DType dtype) {
  json h = json::object();
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    int64_t n = 1;
    for (int64_t s : t.shape) n *= s;
    uint64_t nb = static_cast<uint64_t>(n) * DTypeSize(dtype);
    h[t.name] = {{"dtype", std::string(DTypeName(dtype))},
                 {"shape", t.shape},
                 {"data_offsets", {offset, offset + nb}}};
    offset += nb;
  }
  h["__metadata__"] = {{"format", "pt"}};
  std::string header = h.dump();
  while ((header.size() + 8) % 8 != 0) header.push_back(' ');  // align data to 8 bytes
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError("cannot create " + path);
  uint64_t hl = header.size();
  char len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<char>((hl >> (8 * i)) & 0xff);
  out.write(len_bytes, 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  std::vector<uint16_t> half;
  for (const auto& t : tensors) {
    int64_t n = 1;
    for (int64_t s : t.shape) n *= s;
    if (dtype == DType::kF32) {
      out.write(reinterpret_cast<const char*>(t.data), n * 4);
    } else {
      half.resize(n);
      for (int64_t i = 0; i < n; ++i) {
        half[i] = dtype == DType::kBF16 ? F32ToBF16(t.data[i]) : F32ToF16(t.data[i]);
      }
      out.write(reinterpret_cast<const char*>(half.data()), n * 2);
    }
  }
  out.close();
  if (!out) return absl::DataLossError("cannot write " + path);
  return absl::OkStatus();
}

}  // namespace kvasir
