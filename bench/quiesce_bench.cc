// Quiesce benchmarks (issue 6): the coordinator's own overhead (fake
// backend), target resolution over the live mountinfo/sysfs, and the real
// frozen window of FIFREEZE on ext4/xfs loop mounts this binary creates
// itself under a private temporary directory (root only; skipped otherwise).
// The window figure is what a checkpoint costs the guest's I/O.
#include <benchmark/benchmark.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "strata/quiesce.h"
#include "strata/quiesce_resolve.h"

namespace {

using namespace strata::quiesce;

int Sh(const std::string& cmd) { return std::system(cmd.c_str()); }

std::string ShOut(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  ::pclose(p);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

void BM_CoordinatorFreezeThawFake(benchmark::State& state) {
  auto st = std::make_shared<FakeBackend::State>();
  Coordinator c(std::make_unique<FakeBackend>(st), Coordinator::Options{});
  FreezeRequest r;
  r.targets = {"/tmp"};
  r.force = true;  // the fake backend freezes nothing real
  for (auto _ : state) {
    auto h = c.Freeze(r);
    if (!h.has_value()) {
      state.SkipWithError(h.error().ToString().c_str());
      return;
    }
    benchmark::DoNotOptimize(c.Thaw(*h));
  }
}
BENCHMARK(BM_CoordinatorFreezeThawFake)->Unit(benchmark::kMicrosecond);

void BM_ResolveRoot(benchmark::State& state) {
  for (auto _ : state) {
    auto r = ResolveTargets({"/"}, "/proc/self/mountinfo", "/sys");
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_ResolveRoot)->Unit(benchmark::kMicrosecond);

// Frozen window (freeze -> empty checkpoint -> thaw) of a real filesystem,
// with `dirty_mib` MiB written (not synced) before each freeze: FIFREEZE
// must write them back first, which is the realistic cost.
void FrozenWindow(benchmark::State& state, const std::string& fs_type) {
  if (::geteuid() != 0) {
    state.SkipWithError("needs root (mount, losetup)");
    return;
  }
  char tmpl[] = "/tmp/strata-qbench-XXXXXX";
  if (!::mkdtemp(tmpl)) {
    state.SkipWithError("mkdtemp");
    return;
  }
  std::string dir = tmpl, img = dir + "/img", mnt = dir + "/mnt";
  std::filesystem::create_directories(mnt);
  std::string dev;
  bool ok = Sh("truncate -s 512M " + img) == 0 &&
            Sh("mkfs." + fs_type + " -q " + img + " >/dev/null 2>&1") == 0 &&
            !(dev = ShOut("losetup -f --show " + img)).empty() &&
            Sh("mount " + dev + " " + mnt) == 0;
  if (!ok) {
    state.SkipWithError(("cannot create a " + fs_type + " loop mount").c_str());
  } else {
    Coordinator::Options o;
    o.confine_to = dir;  // never anything but our own mount
    Coordinator c(MakeFifreezeBackend(), o);
    QuiesceRequest q;
    q.targets = {mnt};
    std::vector<char> chunk(1 << 20, 'x');
    int64_t dirty = state.range(0);
    double total_ms = 0;
    for (auto _ : state) {
      state.PauseTiming();
      {
        std::ofstream f(mnt + "/dirty", std::ios::trunc | std::ios::binary);
        for (int64_t i = 0; i < dirty; ++i) f.write(chunk.data(), static_cast<long>(chunk.size()));
      }
      state.ResumeTiming();
      auto r = RunQuiesced(c, q, [] { return strata::Status::Ok(); });
      if (!r.has_value()) {
        state.SkipWithError(r.error().ToString().c_str());
        break;
      }
      double ms = static_cast<double>(r->frozen_for.count()) / 1e6;
      total_ms += ms;
      state.SetIterationTime(ms / 1000);
    }
    state.counters["frozen_ms"] =
        benchmark::Counter(total_ms / static_cast<double>(state.iterations()));
  }
  (void)Sh("fsfreeze -u " + mnt + " 2>/dev/null; umount " + mnt + " 2>/dev/null");
  if (!dev.empty()) (void)Sh("losetup -d " + dev);
  std::filesystem::remove_all(dir);
}

void BM_FrozenWindowExt4(benchmark::State& state) { FrozenWindow(state, "ext4"); }
void BM_FrozenWindowXfs(benchmark::State& state) { FrozenWindow(state, "xfs"); }
BENCHMARK(BM_FrozenWindowExt4)->Arg(0)->Arg(8)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FrozenWindowXfs)->Arg(0)->Arg(8)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
