// Status and Result<T>: errors are values in strata.
//
// No exception crosses the library boundary. A Status carries a small, stable
// code and a message that names the file and, where it applies, the byte
// offset ("disk.qcow2: L2 table at 0x50000 entry 17 points past end of file").
// Result<T> holds either a T or a non-OK Status; its member names follow C++23
// std::expected (has_value, value, error, operator*, operator->) so a later
// switch is mechanical.
//
// Thread safety: values; no shared state.
#ifndef STRATA_STATUS_H_
#define STRATA_STATUS_H_

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace strata {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // the caller passed something wrong
  kNotFound = 2,         // a named thing (checkpoint, bitmap, file) is absent
  kCorruption = 3,       // on-disk data is malformed or fails a checksum
  kIoError = 4,          // the OS failed an I/O call; errno is kept
  kUnsupported = 5,      // valid but not handled (e.g. unknown incompatible bit)
  kNoSpace = 6,          // ENOSPC / EDQUOT
  kAlreadyExists = 7,    // a name or file that must be new exists
  kUnknownState = 8,     // change information was lost: a full backup is needed
  kBusy = 9,             // a resource is in use (e.g. tracker locked)
  kCancelled = 10,       // the caller asked to stop (progress callback, signal)
  kNoMemory = 11,        // an allocation failed (C API; C++ callers see std::bad_alloc)
};

// Name of a code, e.g. "corruption".
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message, int sys_errno = 0)
      : code_(code), errno_(sys_errno), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) {
    return Status(StatusCode::kInvalidArgument, std::move(msg));
  }
  static Status NotFound(std::string msg) {
    return Status(StatusCode::kNotFound, std::move(msg));
  }
  static Status Corruption(std::string msg) {
    return Status(StatusCode::kCorruption, std::move(msg));
  }
  static Status Unsupported(std::string msg) {
    return Status(StatusCode::kUnsupported, std::move(msg));
  }
  static Status AlreadyExists(std::string msg) {
    return Status(StatusCode::kAlreadyExists, std::move(msg));
  }
  static Status UnknownState(std::string msg) {
    return Status(StatusCode::kUnknownState, std::move(msg));
  }
  static Status Cancelled(std::string msg) {
    return Status(StatusCode::kCancelled, std::move(msg));
  }
  static Status Busy(std::string msg) {
    return Status(StatusCode::kBusy, std::move(msg));
  }
  // An I/O error from errno `err`: ENOSPC and EDQUOT become kNoSpace. The
  // message is "<context>: <strerror(err)>".
  static Status FromErrno(int err, std::string_view context);

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  int sys_errno() const { return errno_; }
  const std::string& message() const { return message_; }
  // "corruption: <message>" or "ok".
  std::string ToString() const;

  // Prefixes the message with `context + ": "`; keeps code and errno.
  Status WithContext(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  int errno_ = 0;
  std::string message_;
};

// Either a value or an error. Accessing value() on an error is a bug (assert).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    assert(!std::get<Status>(v_).ok() && "Result from an OK Status");
  }

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  T& value() & { assert(has_value()); return std::get<0>(v_); }
  const T& value() const& { assert(has_value()); return std::get<0>(v_); }
  T&& value() && { assert(has_value()); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Status& error() const { assert(!has_value()); return std::get<1>(v_); }
  // OK when a value is held, the error otherwise.
  Status status() const { return has_value() ? Status() : error(); }

 private:
  std::variant<T, Status> v_;
};

namespace internal {
inline Status ToStatus(const Status& s) { return s; }
template <typename T>
Status ToStatus(const Result<T>& r) { return r.status(); }
}  // namespace internal

}  // namespace strata

#define STRATA_CONCAT_INNER_(a, b) a##b
#define STRATA_CONCAT_(a, b) STRATA_CONCAT_INNER_(a, b)

// Returns the Status of `expr` (a Status or Result) from the enclosing
// function when it is not OK.
#define STRATA_RETURN_IF_ERROR(expr)                                  \
  do {                                                                \
    ::strata::Status strata_status_ = ::strata::internal::ToStatus(expr); \
    if (!strata_status_.ok()) return strata_status_;                  \
  } while (0)

#define STRATA_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.has_value()) return tmp.error();           \
  lhs = std::move(tmp).value()

// `lhs = value of expr` or return its error: STRATA_ASSIGN_OR_RETURN(auto x, F());
#define STRATA_ASSIGN_OR_RETURN(lhs, expr) \
  STRATA_ASSIGN_OR_RETURN_IMPL_(STRATA_CONCAT_(strata_result_, __LINE__), lhs, expr)

#endif  // STRATA_STATUS_H_
