// TrackedDevice: a raw image file whose writes are marked in a Tracker.
// For embedders and demos: Write(offset, data) marks the range first, then
// writes it, so a write is never acknowledged (returned) unmarked — and a
// crash between the two only over-reports.
//
// Thread safety: Write may be called concurrently (pwrite + Tracker::Mark).
#ifndef STRATA_TRACKED_DEVICE_H_
#define STRATA_TRACKED_DEVICE_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "strata/tracker.h"
#include "strata/status.h"
#include "strata/file.h"

namespace strata {

class TrackedDevice {
 public:
  // Opens the raw image `path` read-write. `tracker` is borrowed and must
  // outlive the device. kInvalidArgument when the file is smaller than the
  // tracker's disk size (the tracked disk must be readable in full).
  static Result<std::unique_ptr<TrackedDevice>> Open(const std::string& path, Tracker* tracker);

  // Marks [offset, offset + data.size()) then writes it. Errors of either
  // step are returned; after a failed Mark nothing is written.
  Status Write(uint64_t offset, std::span<const uint8_t> data);
  Status Read(uint64_t offset, std::span<uint8_t> buf);
  // fsync of the image file.
  Status Sync();

 private:
  TrackedDevice(std::unique_ptr<File> file, Tracker* tracker)
      : file_(std::move(file)), tracker_(tracker) {}
  std::unique_ptr<File> file_;
  Tracker* tracker_;
};

}  // namespace strata

#endif  // STRATA_TRACKED_DEVICE_H_
