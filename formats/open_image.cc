#include "strata/open_image.h"

#include <cstring>

#include "strata/file.h"
#include "strata/qcow2_image.h"
#include "formats/raw/raw_image.h"

namespace strata {

namespace {
constexpr uint8_t kQcow2Magic[4] = {'Q', 'F', 'I', 0xfb};
}  // namespace

Result<std::unique_ptr<Image>> OpenImage(const std::string& path, const std::string& format,
                                         const ImageOpenOptions& options) {
  if (format != "auto" && format != "raw" && format != "qcow2") {
    return Status::InvalidArgument("unknown image format '" + format +
                                   "' (expected raw, qcow2 or auto)");
  }
  std::string fmt = format;
  if (fmt == "auto") {
    STRATA_ASSIGN_OR_RETURN(auto file, OpenDiskFile(path));
    uint8_t magic[4] = {};
    STRATA_ASSIGN_OR_RETURN(size_t got, file->Read(0, magic));
    fmt = (got == 4 && std::memcmp(magic, kQcow2Magic, 4) == 0) ? "qcow2" : "raw";
    if (fmt == "raw") return OpenRawImage(std::move(file));
  }
  if (fmt == "qcow2") {
    STRATA_ASSIGN_OR_RETURN(auto img, OpenQcow2Image(path, options));
    return std::unique_ptr<Image>(std::move(img));
  }
  return OpenRawImage(path);
}

}  // namespace strata
