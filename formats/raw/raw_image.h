// Raw images: regular files and block devices.
#ifndef STRATA_FORMATS_RAW_RAW_IMAGE_H_
#define STRATA_FORMATS_RAW_RAW_IMAGE_H_

#include <memory>
#include <string>

#include "strata/file.h"
#include "strata/image.h"

namespace strata {

// Opens a raw image read-only. Like QEMU, the virtual size of a regular file
// is its length rounded up to 512 bytes (the tail reads as zeros); a block
// device's size comes from BLKGETSIZE64. The block-status map comes from
// SEEK_DATA/SEEK_HOLE; where the file system cannot answer, everything is
// reported as data (as QEMU does). Anything but a regular file or a block
// device is kInvalidArgument (OpenDiskFile).
Result<std::unique_ptr<Image>> OpenRawImage(const std::string& path);
// Same over an already-open File (tests use MemFile: then all is data).
Result<std::unique_ptr<Image>> OpenRawImage(std::unique_ptr<File> file);

}  // namespace strata

#endif  // STRATA_FORMATS_RAW_RAW_IMAGE_H_
