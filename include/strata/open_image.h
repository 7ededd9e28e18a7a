// Opening an image of any supported format.
#ifndef STRATA_OPEN_IMAGE_H_
#define STRATA_OPEN_IMAGE_H_

#include <memory>
#include <string>

#include "strata/image.h"

namespace strata {

// `format` is "raw", "qcow2" or "auto" (the qcow2 magic decides; anything
// else is raw). An unknown format name is kInvalidArgument. The image must
// be a regular file or a block device (anything else is kInvalidArgument,
// and a FIFO never blocks the open). `options` limits which backing and
// data files a qcow2 chain may follow (ImageOpenOptions; the default allows
// regular files in the image's own directory with a declared format).
Result<std::unique_ptr<Image>> OpenImage(const std::string& path,
                                         const std::string& format = "auto",
                                         const ImageOpenOptions& options = ImageOpenOptions());

}  // namespace strata

#endif  // STRATA_OPEN_IMAGE_H_
