// qcow2 reader benchmarks against QEMU's own tools on the same images.
//
//  - Map1TiB: the block-status map (MapImage, what `extent-dump --output
//    json` prints) of a 1 TiB qcow2 made with `qemu-img create -o
//    preallocation=metadata` (16 M clusters, every one mapped; the file stays
//    sparse), warm page cache, vs `qemu-img map --output=json`.
//  - SeqRead: sequential guest reads (1 MiB requests) of a 512 MiB image,
//    plain and zstd-compressed, vs `qemu-img convert` into a null-co target.
//
// Images are made once in $STRATA_BENCH_DIR (default /tmp/strata-qcow2-bench)
// and reused. Results: docs/benchmarks.md ("qcow2 reader").
#include <benchmark/benchmark.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "strata/qcow2_image.h"

namespace {

std::string Dir() {
  const char* d = std::getenv("STRATA_BENCH_DIR");
  std::string dir = d ? d : "/tmp/strata-qcow2-bench";
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

bool Exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

void Sh(const std::string& cmd) {
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "qcow2_bench: command failed: %s\n", cmd.c_str());
    std::exit(1);
  }
}

const std::string& Big() {
  static const std::string p = [] {
    std::string f = Dir() + "/prealloc-1t.qcow2";
    if (!Exists(f)) Sh("qemu-img create -q -f qcow2 -o preallocation=metadata " + f + " 1T");
    return f;
  }();
  return p;
}

constexpr uint64_t kSeqSize = uint64_t{512} << 20;

// 512 MiB of text-like data (16 symbols: zstd gets about 2:1), then qcow2.
const std::string& SeqImage(bool zstd) {
  static std::string paths[2];
  std::string& p = paths[zstd];
  if (!p.empty()) return p;
  std::string raw = Dir() + "/seq.raw";
  std::string f = Dir() + (zstd ? "/seq-zstd.qcow2" : "/seq.qcow2");
  if (!Exists(f)) {
    if (!Exists(raw)) {
      FILE* out = std::fopen(raw.c_str(), "wb");
      std::mt19937_64 rng(42);
      std::vector<char> buf(1 << 20);
      for (uint64_t done = 0; done < kSeqSize; done += buf.size()) {
        for (auto& c : buf) c = "abcdefghijklmnop"[rng() & 15];
        std::fwrite(buf.data(), 1, buf.size(), out);
      }
      std::fclose(out);
    }
    Sh("qemu-img convert -O qcow2 " + std::string(zstd ? "-c -o compression_type=zstd " : "") +
       raw + " " + f);
  }
  p = f;
  return p;
}

void Map1TiB(benchmark::State& state) {
  const std::string& path = Big();
  uint64_t entries = 0;
  for (auto _ : state) {
    auto img = strata::OpenQcow2Image(path);
    if (!img) state.SkipWithError(img.error().ToString().c_str());
    entries = 0;
    auto s = strata::MapImage(**img, [&](const strata::MapEntry&) {
      ++entries;
      return strata::Status::Ok();
    });
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
  }
  state.counters["map_entries"] = static_cast<double>(entries);
  state.counters["clusters/s"] = benchmark::Counter(
      static_cast<double>(uint64_t{1} << 24), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(Map1TiB)->Unit(benchmark::kMillisecond)->MinTime(2);

void QemuImgMap1TiB(benchmark::State& state) {
  const std::string& path = Big();
  for (auto _ : state) Sh("qemu-img map --output=json " + path + " > /dev/null");
}
BENCHMARK(QemuImgMap1TiB)->Unit(benchmark::kMillisecond)->Iterations(3);

void SeqRead(benchmark::State& state) {
  const std::string& path = SeqImage(state.range(0) != 0);
  auto img = strata::OpenQcow2Image(path);
  if (!img) {
    state.SkipWithError(img.error().ToString().c_str());
    return;
  }
  std::vector<uint8_t> buf(1 << 20);
  for (auto _ : state) {
    for (uint64_t off = 0; off < (*img)->size(); off += buf.size()) {
      auto s = (*img)->Read(off, buf);
      if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    }
    benchmark::DoNotOptimize(buf.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kSeqSize));
  state.SetLabel(state.range(0) ? "zstd" : "plain");
}
BENCHMARK(SeqRead)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->MinTime(2);

void QemuImgConvert(benchmark::State& state) {
  const std::string& path = SeqImage(state.range(0) != 0);
  for (auto _ : state) {
    Sh("qemu-img convert -n --target-image-opts " + path + " driver=null-co,size=" +
       std::to_string(kSeqSize));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kSeqSize));
  state.SetLabel(state.range(0) ? "zstd" : "plain");
}
BENCHMARK(QemuImgConvert)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
