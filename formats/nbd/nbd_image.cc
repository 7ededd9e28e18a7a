// NBD driver (nbd_image.h) over libnbd.
#include "formats/nbd/nbd_image.h"

#include <libnbd.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>

#include "extents/endian.h"

namespace strata {

namespace {

constexpr char kBaseAllocation[] = "base:allocation";
// base:allocation flags (NBD protocol): bit 0 hole, bit 1 reads as zero.
constexpr uint32_t kStateHole = 1, kStateZero = 2;
// Block status questions cover at most this much at a time (the protocol's
// length field is 32 bits).
constexpr uint64_t kStatusWindow = uint64_t{1} << 30;

std::string LastError() {
  const char* e = nbd_get_error();
  return e ? e : "unknown libnbd error";
}

int LastErrno() {
  int e = nbd_get_errno();
  return e ? e : EIO;
}

nbd_handle* Connect(const std::string& uri, const NbdOptions& o, Status* err) {
  nbd_handle* h = nbd_create();
  if (h == nullptr) {
    *err = Status(StatusCode::kIoError, uri + ": " + LastError());
    return nullptr;
  }
  bool ok = nbd_add_meta_context(h, kBaseAllocation) == 0;
  if (ok && !o.bitmap.empty()) ok = nbd_add_meta_context(h, NbdDirtyBitmapContext(o.bitmap).c_str()) == 0;
  if (ok) ok = nbd_connect_uri(h, uri.c_str()) == 0;
  if (!ok) {
    *err = Status(StatusCode::kIoError, uri + ": " + LastError(), LastErrno());
    nbd_close(h);
    return nullptr;
  }
  return h;
}

}  // namespace

std::string NbdDirtyBitmapContext(const std::string& bitmap) { return "qemu:dirty-bitmap:" + bitmap; }

Result<std::unique_ptr<NbdImage>> NbdImage::Open(const std::string& uri, const NbdOptions& options) {
  std::unique_ptr<NbdImage> img(new NbdImage());
  img->uri_ = uri;
  img->options_ = options;
  Status err;
  nbd_handle* h = Connect(uri, options, &err);
  if (h == nullptr) return err;
  img->handles_.push_back(h);
  int64_t size = nbd_get_size(h);
  if (size < 0) return Status(StatusCode::kIoError, uri + ": size: " + LastError());
  img->size_ = static_cast<uint64_t>(size);
  if (!options.writable && nbd_is_read_only(h) == 0) {
    // Fine: a writable export is read like any other.
  }
  if (options.writable && nbd_is_read_only(h) == 1) {
    return Status::InvalidArgument(uri + ": the export is read-only");
  }
  int64_t maxb = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
  if (maxb > 0) img->max_request_ = std::min<uint64_t>(img->max_request_, static_cast<uint64_t>(maxb));
  if (!options.bitmap.empty()) {
    int c = nbd_can_meta_context(h, NbdDirtyBitmapContext(options.bitmap).c_str());
    if (c != 1) {
      return Status::NotFound(uri + ": the export does not offer dirty bitmap '" + options.bitmap +
                              "' (meta context " + NbdDirtyBitmapContext(options.bitmap) + ")");
    }
  }
  img->multi_conn_ = nbd_can_multi_conn(h) == 1;
  if (img->multi_conn_) {
    for (unsigned i = 1; i < std::max(1u, options.connections); ++i) {
      nbd_handle* more = Connect(uri, options, &err);
      if (more == nullptr) break;  // one connection is enough to be correct
      img->handles_.push_back(more);
    }
  }
  return img;
}

NbdImage::~NbdImage() {
  for (nbd_handle* h : handles_) {
    if (options_.writable) (void)nbd_flush(h, 0);
    (void)nbd_shutdown(h, 0);
    nbd_close(h);
  }
}

Status NbdImage::Error(const std::string& what, uint64_t offset) const {
  return Status(StatusCode::kIoError, uri_ + ": " + what + " at " + Hex(offset) + ": " + LastError(), LastErrno());
}

Status NbdImage::Read(uint64_t offset, std::span<uint8_t> buf) {
  if (offset > size_ || buf.size() > size_ - offset) {
    return Status::InvalidArgument(uri_ + ": read at " + Hex(offset) + " past the end of the export");
  }
  for (uint64_t done = 0; done < buf.size();) {
    uint64_t n = std::min<uint64_t>(buf.size() - done, max_request_);
    if (nbd_pread(handles_[0], buf.data() + done, n, offset + done, 0) != 0) return Error("read", offset + done);
    done += n;
  }
  return Status::Ok();
}

Status NbdImage::Write(uint64_t offset, std::span<const uint8_t> data) {
  for (uint64_t done = 0; done < data.size();) {
    uint64_t n = std::min<uint64_t>(data.size() - done, max_request_);
    if (nbd_pwrite(handles_[0], data.data() + done, n, offset + done, 0) != 0) return Error("write", offset + done);
    done += n;
  }
  return Status::Ok();
}

Status NbdImage::WriteZeros(uint64_t offset, uint64_t length) {
  for (uint64_t done = 0; done < length;) {
    uint64_t n = std::min<uint64_t>(length - done, kStatusWindow);
    if (nbd_zero(handles_[0], n, offset + done, 0) != 0) return Error("write zeros", offset + done);
    done += n;
  }
  return Status::Ok();
}

Status NbdImage::Flush() {
  if (nbd_flush(handles_[0], 0) != 0) return Error("flush", 0);
  return Status::Ok();
}

Status NbdImage::LoadContext(const std::string& context, std::vector<Run>* runs) {
  struct Ctx {
    const std::string* want;
    std::vector<Run>* runs;
    uint64_t end;
  } ctx{&context, runs, 0};
  nbd_extent_callback cb;
  cb.callback = [](void* ud, const char* meta, uint64_t off, uint32_t* entries, size_t n, int* error) -> int {
    (void)error;
    auto* c = static_cast<Ctx*>(ud);
    if (*c->want != meta) return 0;
    uint64_t at = off;
    for (size_t i = 0; i + 1 < n; i += 2) {
      uint64_t len = entries[i];
      if (len == 0) continue;
      if (!c->runs->empty() && c->runs->back().start + c->runs->back().length == at &&
          c->runs->back().flags == entries[i + 1]) {
        c->runs->back().length += len;
      } else {
        c->runs->push_back({at, len, entries[i + 1]});
      }
      at += len;
    }
    c->end = std::max(c->end, at);
    return 0;
  };
  cb.user_data = &ctx;
  cb.free = nullptr;
  uint64_t at = 0;
  while (at < size_) {
    uint64_t n = std::min<uint64_t>(size_ - at, kStatusWindow);
    ctx.end = at;
    if (nbd_block_status(handles_[0], n, at, cb, 0) != 0) return Error("block status (" + context + ")", at);
    if (ctx.end <= at) {
      return Status::Corruption(uri_ + ": block status (" + context + ") at " + Hex(at) + " made no progress");
    }
    at = std::min(ctx.end, size_);
  }
  if (!runs->empty() && runs->back().start + runs->back().length > size_) {
    runs->back().length = size_ - runs->back().start;
  }
  return Status::Ok();
}

Status NbdImage::LoadAllocation() {
  if (have_alloc_) return Status::Ok();
  alloc_.clear();
  if (nbd_can_meta_context(handles_[0], kBaseAllocation) != 1) {
    // A server without block status: everything is data.
    alloc_.push_back({0, size_, 0});
  } else {
    STRATA_RETURN_IF_ERROR(LoadContext(kBaseAllocation, &alloc_));
  }
  have_alloc_ = true;
  return Status::Ok();
}

Status NbdImage::BlockStatus(uint64_t offset, uint64_t length, std::vector<MapEntry>* out) {
  STRATA_RETURN_IF_ERROR(LoadAllocation());
  if (offset > size_ || length > size_ - offset) {
    return Status::InvalidArgument(uri_ + ": block status at " + Hex(offset) + " past the end of the export");
  }
  const uint64_t end = offset + length;
  auto it = std::upper_bound(alloc_.begin(), alloc_.end(), offset,
                             [](uint64_t o, const Run& r) { return o < r.start; });
  if (it != alloc_.begin()) --it;
  for (; it != alloc_.end() && it->start < end; ++it) {
    uint64_t s = std::max(it->start, offset), e = std::min(it->start + it->length, end);
    if (s >= e) continue;
    MapEntry m;
    m.start = s;
    m.length = e - s;
    m.present = (it->flags & kStateHole) == 0;
    m.zero = (it->flags & kStateZero) != 0;
    m.data = !m.zero;
    out->push_back(m);
  }
  return Status::Ok();
}

Result<ExtentSet> NbdImage::DirtyExtents(Granularity g) {
  if (options_.bitmap.empty()) return Status::InvalidArgument(uri_ + ": no dirty bitmap was negotiated");
  std::vector<Run> runs;
  STRATA_RETURN_IF_ERROR(LoadContext(NbdDirtyBitmapContext(options_.bitmap), &runs));
  STRATA_ASSIGN_OR_RETURN(ExtentSet set, ExtentSet::Create(size_, g));
  for (const Run& r : runs) {
    if (r.flags & 1) STRATA_RETURN_IF_ERROR(set.Add(r.start, r.length));  // bit 0: dirty
  }
  return set;
}

// Asynchronous reads over every connection (nbd_image.h).
class NbdReadQueue : public ImageReadQueue {
 public:
  NbdReadQueue(NbdImage& img, unsigned depth) : img_(img), depth_(depth) {}
  ~NbdReadQueue() override {
    // Never free a request libnbd still writes into: wait for all.
    std::vector<Completion> ignored;
    while (outstanding_ > 0 && Reap(&ignored).ok()) ignored.clear();
  }
  unsigned depth() const override { return depth_; }
  unsigned outstanding() const override { return outstanding_; }

  bool KnownZero(uint64_t offset, uint64_t length) override {
    if (!img_.LoadAllocation().ok()) return false;
    const auto& a = img_.alloc_;
    auto it = std::upper_bound(a.begin(), a.end(), offset, [](uint64_t o, const NbdImage::Run& r) { return o < r.start; });
    if (it == a.begin()) return false;
    --it;
    uint64_t at = offset, end = offset + length;
    for (; it != a.end() && at < end; ++it) {
      if (it->start > at) return false;
      if ((it->flags & (kStateHole | kStateZero)) == 0) return false;
      at = it->start + it->length;
    }
    return at >= end;
  }

  Status Submit(uint64_t offset, std::span<uint8_t> buf, uint64_t tag) override {
    // One reference for the submission itself, so a part that completes
    // while later parts are being submitted cannot finish the request.
    auto* req = new Request{this, tag, 1, Status::Ok()};
    Status failed;
    uint64_t done = 0;
    do {
      uint64_t n = std::min<uint64_t>(buf.size() - done, img_.max_request_);
      nbd_completion_callback cb;
      cb.callback = &NbdReadQueue::OnDone;
      cb.user_data = req;
      cb.free = nullptr;
      ++req->parts;
      if (nbd_aio_pread(Pick(), buf.data() + done, n, offset + done, cb, 0) < 0) {
        --req->parts;
        failed = img_.Error("read", offset + done);
        break;
      }
      done += n;
    } while (done < buf.size());
    if (!failed.ok()) {
      if (req->parts == 1) {  // nothing in flight
        delete req;
        return failed;
      }
      req->status = failed;
    }
    ++outstanding_;
    Release(req);
    return Status::Ok();
  }

  Status Reap(std::vector<Completion>* done) override {
    while (finished_.empty() && outstanding_ > 0) {
      std::vector<pollfd> fds;
      std::vector<nbd_handle*> hs;
      for (nbd_handle* h : img_.handles_) {
        unsigned dir = nbd_aio_get_direction(h);
        short ev = 0;
        if (dir & LIBNBD_AIO_DIRECTION_READ) ev |= POLLIN;
        if (dir & LIBNBD_AIO_DIRECTION_WRITE) ev |= POLLOUT;
        if (ev == 0) continue;
        int fd = nbd_aio_get_fd(h);
        if (fd < 0) return img_.Error("poll", 0);
        fds.push_back({fd, ev, 0});
        hs.push_back(h);
      }
      if (fds.empty()) return Status(StatusCode::kIoError, img_.uri_ + ": reads in flight but no connection waits");
      int r = ::poll(fds.data(), fds.size(), img_.options_.timeout_ms);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return Status::FromErrno(errno, img_.uri_ + ": poll");
      if (r == 0) {
        return Status(StatusCode::kIoError, img_.uri_ + ": no reply from the NBD server within " +
                                                std::to_string(img_.options_.timeout_ms / 1000) + " s");
      }
      for (size_t i = 0; i < fds.size(); ++i) {
        int rc = 0;
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) rc = nbd_aio_notify_read(hs[i]);
        else if (fds[i].revents & POLLOUT) rc = nbd_aio_notify_write(hs[i]);
        if (rc != 0) return img_.Error("connection", 0);
      }
    }
    while (!finished_.empty()) {
      done->push_back(std::move(finished_.front()));
      finished_.pop_front();
      --outstanding_;
    }
    return Status::Ok();
  }

 private:
  struct Request {
    NbdReadQueue* q;
    uint64_t tag;
    int parts;
    Status status;
  };

  static int OnDone(void* ud, int* error) {
    auto* r = static_cast<Request*>(ud);
    if (*error != 0 && r->status.ok()) {
      r->status = Status(StatusCode::kIoError, r->q->img_.uri_ + ": read failed: " + std::strerror(*error), *error);
    }
    r->q->Release(r);
    return 1;  // retire the command
  }

  void Release(Request* r) {
    if (--r->parts == 0) {
      finished_.push_back({r->tag, r->status});
      delete r;
    }
  }

  // The connection with the fewest requests in flight.
  nbd_handle* Pick() {
    nbd_handle* best = img_.handles_[0];
    int least = nbd_aio_in_flight(best);
    for (size_t i = 1; i < img_.handles_.size(); ++i) {
      int n = nbd_aio_in_flight(img_.handles_[i]);
      if (n >= 0 && n < least) {
        least = n;
        best = img_.handles_[i];
      }
    }
    return best;
  }

  NbdImage& img_;
  unsigned depth_;
  unsigned outstanding_ = 0;
  std::deque<Completion> finished_;
};

std::unique_ptr<ImageReadQueue> NbdImage::OpenReadQueue(unsigned depth) {
  return std::make_unique<NbdReadQueue>(*this, std::max(1u, depth));
}

}  // namespace strata
