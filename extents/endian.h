// Explicit little- and big-endian loads and stores over byte pointers.
// On-disk structures are never cast onto memory: every field goes through
// one of these (STYLE §5).
#ifndef STRATA_EXTENTS_ENDIAN_H_
#define STRATA_EXTENTS_ENDIAN_H_

#include <cstdint>
#include <cstring>
#include <string>

namespace strata {

inline uint16_t LoadLE16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
inline uint32_t LoadLE32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
inline uint64_t LoadLE64(const uint8_t* p) {
  return uint64_t(LoadLE32(p)) | uint64_t(LoadLE32(p + 4)) << 32;
}
inline uint16_t LoadBE16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t LoadBE32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}
inline uint64_t LoadBE64(const uint8_t* p) {
  return uint64_t(LoadBE32(p)) << 32 | uint64_t(LoadBE32(p + 4));
}

inline void StoreLE16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v); p[1] = uint8_t(v >> 8); }
inline void StoreLE32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline void StoreLE64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline void StoreBE32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (24 - 8 * i));
}
inline void StoreBE64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (56 - 8 * i));
}

// Appends little-endian fields to a byte string.
inline void AppendLE16(std::string* s, uint16_t v) { uint8_t b[2]; StoreLE16(b, v); s->append(reinterpret_cast<char*>(b), 2); }
inline void AppendLE32(std::string* s, uint32_t v) { uint8_t b[4]; StoreLE32(b, v); s->append(reinterpret_cast<char*>(b), 4); }
inline void AppendLE64(std::string* s, uint64_t v) { uint8_t b[8]; StoreLE64(b, v); s->append(reinterpret_cast<char*>(b), 8); }

// "0x1f000": offsets in error messages.
inline std::string Hex(uint64_t v) {
  static const char* d = "0123456789abcdef";
  char buf[19];
  int i = 18;
  buf[i] = 0;
  do { buf[--i] = d[v & 15]; v >>= 4; } while (v != 0);
  buf[--i] = 'x';
  buf[--i] = '0';
  return std::string(buf + i);
}

}  // namespace strata

#endif  // STRATA_EXTENTS_ENDIAN_H_
