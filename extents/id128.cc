#include "strata/id128.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <random>

namespace strata {

Id128 RandomId128() {
  Id128 id{};
  do {
    size_t got = 0;
    while (got < id.size()) {
      ssize_t n = ::getrandom(id.data() + got, id.size() - got, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        // No getrandom (very old kernel or seccomp): the C++ library's source.
        std::random_device rd;
        for (size_t i = 0; i < id.size(); i += 4) {
          uint32_t v = rd();
          std::memcpy(id.data() + i, &v, 4);
        }
        got = id.size();
        break;
      }
      got += static_cast<size_t>(n);
    }
  } while (IsNullId128(id));
  return id;
}

std::string Id128ToHex(const Id128& id) {
  static const char* d = "0123456789abcdef";
  std::string s;
  s.reserve(32);
  for (uint8_t b : id) {
    s += d[b >> 4];
    s += d[b & 15];
  }
  return s;
}

Result<Id128> Id128FromHex(std::string_view hex) {
  Id128 id{};
  auto bad = [&] {
    return Status::InvalidArgument("'" + std::string(hex) + "' is not a 128-bit id (32 hex digits)");
  };
  if (hex.size() != 32) return bad();
  for (size_t i = 0; i < 32; ++i) {
    char c = hex[i];
    int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (v < 0) return bad();
    id[i / 2] = static_cast<uint8_t>(id[i / 2] << 4 | v);
  }
  return id;
}

}  // namespace strata
