#include "strata/status.h"

#include <cerrno>
#include <cstring>

namespace strata {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid argument";
    case StatusCode::kNotFound: return "not found";
    case StatusCode::kCorruption: return "corruption";
    case StatusCode::kIoError: return "I/O error";
    case StatusCode::kUnsupported: return "unsupported";
    case StatusCode::kNoSpace: return "no space";
    case StatusCode::kAlreadyExists: return "already exists";
    case StatusCode::kUnknownState: return "unknown state";
    case StatusCode::kBusy: return "busy";
    case StatusCode::kCancelled: return "cancelled";
    case StatusCode::kNoMemory: return "out of memory";
  }
  return "unknown code";
}

Status Status::FromErrno(int err, std::string_view context) {
  StatusCode code = (err == ENOSPC || err == EDQUOT) ? StatusCode::kNoSpace
                    : (err == ENOENT)                 ? StatusCode::kNotFound
                                                      : StatusCode::kIoError;
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(err);
  return Status(code, std::move(msg), err);
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  std::string s(StatusCodeName(code_));
  s += ": ";
  s += message_;
  return s;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += message_;
  return Status(code_, std::move(msg), errno_);
}

}  // namespace strata
