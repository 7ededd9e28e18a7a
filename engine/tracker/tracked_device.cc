#include "strata/tracked_device.h"

#include "strata/units.h"

namespace strata {

Result<std::unique_ptr<TrackedDevice>> TrackedDevice::Open(const std::string& path,
                                                           Tracker* tracker) {
  if (tracker == nullptr) return Status::InvalidArgument("TrackedDevice: null tracker");
  STRATA_ASSIGN_OR_RETURN(auto file, OpenPosixFile(path, OpenMode::kReadWrite));
  STRATA_ASSIGN_OR_RETURN(uint64_t size, file->Size());
  if (size < tracker->disk_size()) {
    return Status::InvalidArgument(path + ": image has " + std::to_string(size) +
                                   " bytes, the tracker tracks " +
                                   std::to_string(tracker->disk_size()));
  }
  return std::unique_ptr<TrackedDevice>(new TrackedDevice(std::move(file), tracker));
}

Status TrackedDevice::Write(uint64_t offset, std::span<const uint8_t> data) {
  // Mark first: the range is recorded (and, with the intent log, durable)
  // before any byte reaches the image.
  STRATA_RETURN_IF_ERROR(tracker_->Mark(offset, data.size()));
  return file_->Write(offset, data);
}

Status TrackedDevice::Read(uint64_t offset, std::span<uint8_t> buf) {
  return file_->ReadFull(offset, buf);
}

Status TrackedDevice::Sync() { return file_->Sync(); }

}  // namespace strata
