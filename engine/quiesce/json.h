// Internal: the minimal JSON the QEMU guest agent protocol needs. A pure
// codec: Parse never reads past `text`, bounds nesting, and returns
// kCorruption with the byte offset on malformed input.
#ifndef STRATA_ENGINE_QUIESCE_JSON_H_
#define STRATA_ENGINE_QUIESCE_JSON_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "extents/status.h"

namespace strata::quiesce::internal {

struct Json {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type = Type::kNull;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;

  // Member `key` of an object, or nullptr.
  const Json* Find(std::string_view key) const;
};

// Parses exactly one value (surrounding whitespace allowed). `what` names
// the source in errors: "qemu-ga reply: byte 17: expected ':'".
Result<Json> ParseJson(std::string_view text, const std::string& what);

// A JSON string literal with escapes.
std::string JsonQuote(std::string_view s);

}  // namespace strata::quiesce::internal

#endif  // STRATA_ENGINE_QUIESCE_JSON_H_
