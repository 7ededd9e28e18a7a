// NBD exports as Images, over libnbd (Debian libnbd-dev).
//
// An NbdImage reads any NBD export (qemu-nbd, qemu-storage-daemon, QEMU's
// built-in server, nbdkit, a libvirt pull-mode backup export) named by an
// NBD URI ("nbd+unix:///NAME?socket=PATH", "nbd://127.0.0.1:10809/NAME").
// Block status comes from the `base:allocation` meta context (holes and
// zeros are never read) and, when a bitmap is named, from
// `qemu:dirty-bitmap:NAME` (bit 0: dirty), QEMU's way of exporting a dirty
// bitmap over NBD. libnbd 1.14 has no named constants for that context: the
// string and the bit are used as QEMU documents them (docs/interop/nbd.txt).
//
// Reads: Read() is synchronous on the first connection; OpenReadQueue()
// gives libnbd's asynchronous API with many requests in flight, spread
// over several connections when the server offers multi-conn (a
// consistent view on every connection).
//
// The allocation map is read once, at the first block-status question, and
// kept: an export is read as one point in time (a fleecing view), so it
// cannot change while it is read.
//
// Thread safety: one thread at a time (libnbd handles are thread safe, but
// the cached maps are not).
#ifndef STRATA_FORMATS_NBD_NBD_IMAGE_H_
#define STRATA_FORMATS_NBD_NBD_IMAGE_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "strata/extent_set.h"
#include "strata/image.h"

struct nbd_handle;

namespace strata {

struct NbdOptions {
  // Also negotiate `qemu:dirty-bitmap:BITMAP` (DirtyExtents needs it).
  std::string bitmap;
  // Connections used for asynchronous reads when the server offers
  // multi-conn (otherwise 1).
  unsigned connections = 4;
  // Open for writing (NbdWriter); reads only otherwise.
  bool writable = false;
  // How long one wait for the server may take before the read fails.
  int timeout_ms = 120000;
};

// The context name QEMU uses for dirty bitmap NAME.
std::string NbdDirtyBitmapContext(const std::string& bitmap);

class NbdImage : public Image {
 public:
  // Connects (kIoError naming the URI when the server cannot be reached or
  // refuses; kNotFound when a bitmap was asked for and the export does not
  // offer it).
  static Result<std::unique_ptr<NbdImage>> Open(const std::string& uri, const NbdOptions& options = {});
  ~NbdImage() override;

  const std::string& name() const override { return uri_; }
  std::string_view format() const override { return "nbd"; }
  uint64_t size() const override { return size_; }
  Status Read(uint64_t offset, std::span<uint8_t> buf) override;
  // From base:allocation: a hole is not present (reads as zeros), a zero
  // range is present and zero, anything else is data.
  Status BlockStatus(uint64_t offset, uint64_t length, std::vector<MapEntry>* out) override;
  std::unique_ptr<ImageReadQueue> OpenReadQueue(unsigned depth) override;

  // The blocks the exported bitmap marks dirty, at granularity `g` (a block
  // is dirty when any byte of it is). O(dirty runs) in memory.
  Result<ExtentSet> DirtyExtents(Granularity g);

  // Writes (writable exports): `data` at `offset`, or zeros.
  Status Write(uint64_t offset, std::span<const uint8_t> data);
  Status WriteZeros(uint64_t offset, uint64_t length);
  Status Flush();

  unsigned connections() const { return static_cast<unsigned>(handles_.size()); }
  bool multi_conn() const { return multi_conn_; }
  uint64_t max_request() const { return max_request_; }

 private:
  friend class NbdReadQueue;
  NbdImage() = default;
  struct Run {
    uint64_t start, length;
    uint32_t flags;
  };
  // Walks `context` over the whole disk.
  Status LoadContext(const std::string& context, std::vector<Run>* runs);
  Status LoadAllocation();
  Status Error(const std::string& what, uint64_t offset) const;

  std::string uri_;
  NbdOptions options_;
  uint64_t size_ = 0;
  uint64_t max_request_ = 32u << 20;
  bool multi_conn_ = false;
  std::vector<nbd_handle*> handles_;
  bool have_alloc_ = false;
  std::vector<Run> alloc_;  // base:allocation, whole disk, ascending
};

}  // namespace strata

#endif  // STRATA_FORMATS_NBD_NBD_IMAGE_H_
