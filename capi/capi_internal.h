// Helpers shared by the C interface's translation units (strata_c.cc,
// strata_point.cc): Status to code plus a thread-local message, and a guard
// that keeps every C++ exception from crossing into C. Not installed.
#ifndef STRATA_CAPI_CAPI_INTERNAL_H_
#define STRATA_CAPI_CAPI_INTERNAL_H_

#include <exception>
#include <new>
#include <string>

#include "strata/status.h"
#include "strata/strata.h"

namespace strata::capi {

// strata_last_error()'s text, per thread.
inline thread_local std::string last_error;

inline int Code(const Status& s) {
  if (s.ok()) {
    last_error.clear();
    return STRATA_OK;
  }
  last_error = s.message();
  return static_cast<int>(s.code());
}

inline int Invalid(const std::string& what) { return Code(Status::InvalidArgument(what)); }

// Runs `fn` with every exception turned into a code.
template <class Fn>
int Guard(Fn&& fn) noexcept {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    last_error = "out of memory";
    return STRATA_E_NO_MEMORY;
  } catch (const std::exception& e) {
    last_error = std::string("internal error: ") + e.what();
    return STRATA_E_INTERNAL;
  } catch (...) {
    last_error = "internal error";
    return STRATA_E_INTERNAL;
  }
}

}  // namespace strata::capi

#endif  // STRATA_CAPI_CAPI_INTERNAL_H_
