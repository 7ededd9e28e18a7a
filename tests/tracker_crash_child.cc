// Helper for tracker_crash_test: opens a tracker state directory, marks
// random ranges forever and, after each Mark returns, writes the range (two
// little-endian u64) to the pipe `fd`; now and then takes a checkpoint or
// flushes. The parent SIGKILLs it at a random moment.
// Usage: tracker_crash_child DIR FD SEED
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "strata/tracker.h"
#include "extents/endian.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: tracker_crash_child DIR FD SEED\n");
    return 2;
  }
  int fd = std::atoi(argv[2]);
  uint64_t seed = std::strtoull(argv[3], nullptr, 10);
  auto t = strata::Tracker::Open(argv[1]);
  if (!t) {
    std::fprintf(stderr, "tracker_crash_child: %s\n", t.error().ToString().c_str());
    return 1;
  }
  std::mt19937_64 rng(seed);
  const uint64_t size = (*t)->disk_size();
  for (uint64_t i = 0;; ++i) {
    uint64_t off = rng() % size;
    uint64_t max_len = rng() % 16 == 0 ? 4 << 20 : 65536;
    uint64_t len = 1 + rng() % std::min<uint64_t>(size - off, max_len);
    strata::Status s = (*t)->Mark(off, len);
    if (!s.ok()) {
      std::fprintf(stderr, "tracker_crash_child: %s\n", s.ToString().c_str());
      return 1;
    }
    uint8_t rec[16];
    strata::StoreLE64(rec, off);
    strata::StoreLE64(rec + 8, len);
    if (::write(fd, rec, sizeof rec) != sizeof rec) return 1;  // atomic: < PIPE_BUF
    int r = static_cast<int>(rng() % 200);
    if (r == 0) {
      auto c = (*t)->Checkpoint("child-" + std::to_string(seed) + "-" + std::to_string(i));
      if (!c) return 1;
    } else if (r == 1) {
      if (!(*t)->Flush().ok()) return 1;
    }
  }
}
