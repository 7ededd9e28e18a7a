// `strata scribble`: rewrites random blocks of a raw image, marking every
// write in a tracker first (through the tracked-device helper), as a guest
// would. For the demo, tests and benchmarks.
#include <cinttypes>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "strata/tracked_device.h"
#include "strata/tracker.h"
#include "strata/file.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/sample_data.h"

namespace strata::cli {
namespace {

constexpr char kHelp[] = R"(Usage: strata scribble [--tracker DIR] (--fraction F | --bytes N) [OPTIONS] IMAGE

Rewrites random, distinct, block-aligned blocks of the raw image IMAGE with
VM-like content (two thirds compressible, one third random, some zeroed).
With --tracker every write is marked in the tracker before it is made.
  --block N      size of one write (default 64K)
  --seed N       random seed (default 1)
  --save FILE    also write the new bytes, concatenated, to FILE
  --json         machine-readable result
)";

int ScribbleMain(int argc, char** argv) {
  const char* tool = "strata scribble";
  auto a = Args::Parse(argc, argv, 1, {"--tracker", "--fraction", "--bytes", "--block", "--seed", "--save"},
                       {"--help", "--json"});
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  if (a->positional().size() != 1) return Usage(tool, "expected one IMAGE");
  if (a->Has("--fraction") == a->Has("--bytes")) return Usage(tool, "give one of --fraction and --bytes");
  uint64_t block = 64 * 1024, seed = 1;
  if (auto b = a->Get("--block")) {
    auto v = ParseSize(*b);
    if (!v || *v == 0 || *v % 512 != 0 || *v > (64u << 20)) return Usage(tool, "--block must be a multiple of 512 up to 64M");
    block = *v;
  }
  if (auto s = a->Get("--seed")) {
    auto v = ParseSize(*s);
    if (!v) return Usage(tool, "--seed must be a whole number");
    seed = *v;
  }
  const std::string path = a->positional()[0];
  auto file = OpenPosixFile(path, OpenMode::kReadWrite);
  if (!file) return Fail(tool, file.error());
  auto size = (*file)->Size();
  if (!size) return Fail(tool, size.error());
  const uint64_t blocks = *size / block;
  if (blocks == 0) return Fail(tool, Status::InvalidArgument(path + ": smaller than one block"));
  uint64_t count = 0;
  if (auto f = a->Get("--fraction")) {
    char* end = nullptr;
    double frac = std::strtod(f->c_str(), &end);
    if (end == f->c_str() || *end || !(frac >= 0 && frac <= 1)) return Usage(tool, "--fraction must be between 0 and 1");
    count = static_cast<uint64_t>(static_cast<double>(blocks) * frac);
  } else {
    auto n = ParseSize(*a->Get("--bytes"));
    if (!n) return Usage(tool, n.error().message());
    count = std::min(blocks, (*n + block - 1) / block);
  }
  std::unique_ptr<Tracker> tracker;
  std::unique_ptr<TrackedDevice> device;
  if (auto dir = a->Get("--tracker")) {
    auto t = Tracker::Open(*dir);
    if (!t) return Fail(tool, t.error());
    tracker = std::move(*t);
    auto d = TrackedDevice::Open(path, tracker.get());
    if (!d) return Fail(tool, d.error());
    device = std::move(*d);
  }
  std::unique_ptr<File> save;
  if (auto s = a->Get("--save")) {
    auto f = OpenPosixFile(*s, OpenMode::kCreate);
    if (!f) return Fail(tool, f.error());
    save = std::move(*f);
    if (Status st = save->Truncate(0); !st.ok()) return Fail(tool, st);
  }
  std::mt19937_64 rng(seed);
  std::set<uint64_t> chosen;
  while (chosen.size() < count) chosen.insert(rng() % blocks);
  std::vector<uint8_t> buf(block);
  uint64_t saved = 0;
  for (uint64_t b : chosen) {
    int kind = static_cast<int>(rng() % 8);
    if (kind == 0) std::fill(buf.begin(), buf.end(), 0);  // a discard-like zeroing
    else FillSample(rng, kind <= 3, buf.data(), buf.size());
    Status st = device ? device->Write(b * block, buf) : (*file)->Write(b * block, buf);
    if (!st.ok()) return Fail(tool, st);
    if (save) {
      if (Status s2 = save->Write(saved, buf); !s2.ok()) return Fail(tool, s2);
      saved += buf.size();
    }
  }
  Status st = device ? device->Sync() : (*file)->Sync();
  if (st.ok() && tracker) st = tracker->Close();
  if (!st.ok()) return Fail(tool, st);
  if (a->Has("--json")) {
    PrintJson(Json{{"image", path}, {"writes", count}, {"bytes", count * block}});
  } else {
    std::printf("rewrote %" PRIu64 " blocks of %s (%s)%s\n", count, FormatBytes(block).c_str(),
                FormatBytes(count * block).c_str(), tracker ? ", marked in the tracker" : "");
  }
  return kExitOk;
}

Registrar reg("scribble", "rewrite random blocks of an image (marked in a tracker)", &ScribbleMain);

}  // namespace
}  // namespace strata::cli
