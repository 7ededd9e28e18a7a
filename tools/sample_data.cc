#include "tools/sample_data.h"

#include <cstring>

namespace strata::cli {

void FillSample(std::mt19937_64& rng, bool random, uint8_t* p, size_t n) {
  if (random) {
    for (size_t i = 0; i + 8 <= n; i += 8) {
      uint64_t v = rng();
      std::memcpy(p + i, &v, 8);
    }
    return;
  }
  static const char* const kWords[] = {
      "the ", "kernel ", "config ", "usr/lib ", "error ", "0x7fff ", "return ", "int ",
      "while ", "struct ", "backup ", "disk ", "block ", "value ", "{\n", "}\n",
      "#include ", "static ", "data ", "=", ";\n", "  ", "if (", ") ", "page ", "void "};
  size_t i = 0;
  while (i < n) {
    const char* w = kWords[rng() % (sizeof kWords / sizeof *kWords)];
    size_t len = std::strlen(w);
    if (rng() % 16 == 0) {  // sprinkle some entropy, as real files have
      uint64_t v = rng();
      len = std::min<size_t>(8, n - i);
      std::memcpy(p + i, &v, len);
    } else {
      len = std::min(len, n - i);
      std::memcpy(p + i, w, len);
    }
    i += len;
  }
}

}  // namespace strata::cli
