// `strata generate`: writes a deterministic sample disk image (sparse raw)
// with VM-like content, for the demo, tests and benchmarks.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "strata/units.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/progress.h"
#include "tools/sample_data.h"

namespace strata::cli {
namespace {

constexpr char kHelp[] = R"(Usage: strata generate --size SIZE [--fill FRACTION] [--seed N] [--json]
                       [--progress | -q] OUTPUT

Writes a sparse raw disk image of SIZE bytes in which about FRACTION
(default 0.10) of the space holds data, in runs of 64 KiB to 4 MiB at
random places: two thirds text-like compressible data (like OS files, zstd
ratio ~3), one third random bytes (like compressed media). The same seed
(default 1) gives the same image byte for byte. OUTPUT must not exist.
SIZE is bytes or a multiple as qemu-img takes it (64k, 4G, 1.5G, 4GiB).
A progress line is shown on a terminal (--progress forces it, -q hides it).
)";

int GenerateMain(int argc, char** argv) {
  std::set<std::string> bf = {"--help", "--json"};
  bf.insert(kProgressFlags.begin(), kProgressFlags.end());
  auto args = Args::Parse(argc, argv, 1, {"--size", "--fill", "--seed"}, bf);
  if (!args) return Usage("strata generate", args.error().message());
  if (args->Has("--help")) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  auto oo = OutputOptions::From(*args);
  if (!oo) return Usage("strata generate", oo.error().message());
  if (!args->Has("--size")) return Usage("strata generate", "--size is required");
  if (args->positional().size() != 1) return Usage("strata generate", "expected one OUTPUT path");
  auto size = ParseSize(*args->Get("--size"));
  if (!size) return Usage("strata generate", size.error().message());
  if (*size == 0 || *size > kMaxDiskSize) return Usage("strata generate", "--size out of range");
  double fill = 0.10;
  if (auto f = args->Get("--fill")) {
    char* end = nullptr;
    fill = std::strtod(f->c_str(), &end);
    if (end == f->c_str() || *end != '\0' || !(fill >= 0.0 && fill <= 1.0)) {
      return Usage("strata generate", "--fill must be a number between 0 and 1");
    }
  }
  uint64_t seed = 1;
  if (auto s = args->Get("--seed")) {
    auto v = ParseSize(*s);
    if (!v) return Usage("strata generate", "--seed must be a whole number");
    seed = *v;
  }
  const std::string out = args->positional()[0];
  int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Fail("strata generate", Status::FromErrno(errno, out));
  auto fail = [&](const Status& s) {
    ::close(fd);
    ::unlink(out.c_str());  // no partial image left behind
    return Fail("strata generate", s);
  };
  if (::ftruncate(fd, static_cast<off_t>(*size)) != 0) {
    return fail(Status::FromErrno(errno, out + ": truncate"));
  }
  auto t0 = std::chrono::steady_clock::now();
  std::mt19937_64 rng(seed);
  const uint64_t target = static_cast<uint64_t>(static_cast<double>(*size) * fill);
  const size_t kChunk = 64 * 1024;
  std::vector<uint8_t> buf(kChunk);
  uint64_t written = 0, runs = 0;
  Progress progress("generate", *oo);
  while (written < target) {
    progress.Update(written, target);
    uint64_t len = kChunk * (1 + rng() % 64);  // 64 KiB .. 4 MiB
    len = std::min<uint64_t>(len, (target - written + kChunk - 1) / kChunk * kChunk);
    uint64_t slots = *size / kChunk;
    if (slots == 0) break;
    uint64_t off = (rng() % slots) * kChunk;
    len = std::min(len, *size - off);
    int kind = (rng() % 3 == 0) ? 1 : 0;
    for (uint64_t at = 0; at < len; at += kChunk) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, len - at));
      FillSample(rng, kind == 1, buf.data(), n);
      if (::pwrite(fd, buf.data(), n, static_cast<off_t>(off + at)) != static_cast<ssize_t>(n)) {
        return fail(Status::FromErrno(errno, out + ": write at " + std::to_string(off + at)));
      }
    }
    written += len;  // overlaps make the real fill a little lower
    ++runs;
  }
  progress.Update(target, target);
  progress.Clear();
  if (::fsync(fd) != 0) return fail(Status::FromErrno(errno, out + ": fsync"));
  ::close(fd);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (args->Has("--json")) {
    PrintJson(Json{{"image", out}, {"size", *size}, {"written", written}, {"runs", runs}, {"seconds", secs}});
  } else {
    std::printf("generated %s: %s virtual, %s written in %" PRIu64 " runs (%.2f s)\n",
                out.c_str(), FormatBytes(*size).c_str(), FormatBytes(written).c_str(), runs, secs);
  }
  return kExitOk;
}

Registrar reg("generate", "write a deterministic sample disk image (sparse raw)", &GenerateMain);

}  // namespace
}  // namespace strata::cli
