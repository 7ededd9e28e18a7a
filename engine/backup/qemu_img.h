// Internal: persistent qcow2 bitmaps are added and removed with QEMU's own
// qemu-img (Debian qemu-utils), never by writing qcow2 metadata ourselves:
// qemu-img updates refcounts and the bitmap directory the way every other
// QEMU tool expects, and takes QEMU's image locks, so an image a running VM
// holds open is refused instead of corrupted.
#ifndef STRATA_ENGINE_BACKUP_QEMU_IMG_H_
#define STRATA_ENGINE_BACKUP_QEMU_IMG_H_

#include <cstdint>
#include <string>

#include "strata/status.h"

namespace strata::internal {

// `qemu-img bitmap ACTION [-g GRANULARITY] -f qcow2 IMAGE NAME` with ACTION
// one of "--add", "--remove", "--disable", "--enable"; granularity 0: QEMU's
// default. qemu-img is found on PATH (or $STRATA_QEMU_IMG). Errors name the
// image and carry qemu-img's own first line: kUnsupported when qemu-img is
// missing, kBusy when the image is locked by another process, kIoError
// otherwise.
Status QemuImgBitmap(const std::string& image, const std::string& action, const std::string& name,
                     uint64_t granularity = 0);

}  // namespace strata::internal

#endif  // STRATA_ENGINE_BACKUP_QEMU_IMG_H_
