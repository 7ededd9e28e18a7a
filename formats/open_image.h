// Opening an image of any supported format.
#ifndef STRATA_FORMATS_OPEN_IMAGE_H_
#define STRATA_FORMATS_OPEN_IMAGE_H_

#include <memory>
#include <string>

#include "formats/image.h"

namespace strata {

// `format` is "raw", "qcow2" or "auto" (the qcow2 magic decides; anything
// else is raw). An unknown format name is kInvalidArgument.
Result<std::unique_ptr<Image>> OpenImage(const std::string& path,
                                         const std::string& format = "auto");

}  // namespace strata

#endif  // STRATA_FORMATS_OPEN_IMAGE_H_
