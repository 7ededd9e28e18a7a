// Power loss (issue 11): the tracker runs over FaultEnv, an in-memory file
// system that at a power cut keeps only what was made durable. A random plan
// of Create / Mark / Checkpoint / Remove / Resize / Flush / Close+Open is run
// once to count its mutating calls, then again with the power cut at random
// call numbers, in each of FaultEnv's three cut modes. After the cut the
// state is reopened and checked against a model of what was acknowledged:
//  * every Mark (and every grown area) that returned OK is in
//    ChangedSince(C) for every surviving checkpoint C taken before it, and in
//    ChangedBetween of the two checkpoints around it;
//  * every Checkpoint / Remove / Resize that returned OK is visible, and the
//    one that did not return is complete or absent;
//  * nothing is reported that no mark could have touched (rounded out to
//    intent regions);
//  * with the intent log on, no query answers kUnknownState (a clean power
//    cut loses no information); with it off, only the active generation may
//    be unknown, and only after an unclean shutdown;
//  * the reopened tracker has removed its leftovers and works (mark,
//    checkpoint, close, reopen).
// A violation is shrunk (operations dropped while some cut point still
// fails) and reported with the seed, plan, cut index and mode.
// STRATA_SEED replays a run; STRATA_POWER_PLANS sets the number of plans.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/tracker/state_format.h"
#include "strata/tracker.h"
#include "strata/env.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using CutMode = FaultEnv::CutMode;
constexpr CutMode kModes[] = {CutMode::kStrict, CutMode::kKeepNames, CutMode::kKeepBytes};
const char* ModeName(CutMode m) {
  return m == CutMode::kStrict ? "strict" : m == CutMode::kKeepNames ? "keep-names" : "keep-bytes";
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kDefaultPlans = 150;  // 1,200 cut points
#else
constexpr int kDefaultPlans = 400;  // 3,200 cut points
#endif
constexpr int kCutsPerPlan = 8;
constexpr uint64_t kGran = 4096;
const std::string kDir = "/st";

enum class Kind { kCreate, kMark, kMarkWide, kStripes, kCheckpoint, kRemove, kResize, kFlush, kReopen };
const char* KindName(Kind k) {
  switch (k) {
    case Kind::kCreate: return "create";
    case Kind::kMark: return "mark";
    case Kind::kMarkWide: return "mark-wide";
    case Kind::kStripes: return "stripes";
    case Kind::kCheckpoint: return "checkpoint";
    case Kind::kRemove: return "remove";
    case Kind::kResize: return "resize";
    case Kind::kFlush: return "flush";
    case Kind::kReopen: return "close+open";
  }
  return "?";
}

// Operands are resolved against the state when the op runs, so that any
// subsequence of a plan is a valid plan (shrinking drops operations).
struct Op {
  Kind kind;
  uint64_t a = 0, b = 0;
  std::string Describe() const {
    return std::string(KindName(kind)) + "(" + std::to_string(a) + "," + std::to_string(b) + ")";
  }
};

struct Plan {
  uint64_t seed = 0;
  bool intent_log = true;
  uint32_t region_shift = 16;
  uint64_t disk_size = 0;
  std::vector<Op> ops;  // ops[0] is kCreate
};

Plan MakePlan(uint64_t seed) {
  std::mt19937_64 rng(seed);
  Plan p;
  p.seed = seed;
  p.intent_log = rng() % 8 != 0;
  p.region_shift = rng() % 2 ? 15 : 16;
  p.disk_size = (1 << 20) + rng() % (3 << 20);
  if (rng() % 2) p.disk_size &= ~(kGran - 1);
  p.ops.push_back({Kind::kCreate});
  const int n = 30 + static_cast<int>(rng() % 50);
  for (int i = 0; i < n; ++i) {
    const int r = static_cast<int>(rng() % 100);
    Op op{Kind::kMark, rng(), 1 + rng() % 20000};
    if (r < 40) {
    } else if (r < 46) {
      op = {Kind::kMarkWide, rng(), 1 + rng() % (2 << 20)};
    } else if (r < 51) {
      op = {Kind::kStripes, rng(), 8 + rng() % 120};
    } else if (r < 66) {
      op = {Kind::kCheckpoint};
    } else if (r < 75) {
      op = {Kind::kRemove, rng()};
    } else if (r < 81) {
      op = {Kind::kResize, (64 << 10) + rng() % (5 << 20)};
    } else if (r < 90) {
      op = {Kind::kFlush};
    } else {
      op = {Kind::kReopen};
    }
    p.ops.push_back(op);
  }
  return p;
}

// What the plan's execution acknowledged before the power went.
struct Mark {
  uint64_t off, len;
  size_t time;  // index of the op
};
struct Cp {
  std::string name;
  size_t time;
};
struct Outcome {
  bool create_acked = false;
  size_t inflight = SIZE_MAX;  // index of the op that started and did not return OK
  std::vector<Mark> acked;     // marks and grown areas that returned OK
  std::vector<Mark> touched;   // every range a mark or grow may have touched (for "no garbage")
  std::vector<Cp> cps;         // checkpoints after the acknowledged ops, oldest first
  uint64_t size = 0;           // disk size after the acknowledged ops
  std::vector<Mark> shrinks;   // acknowledged resizes: {new size, 0, time}
  // The in-flight op's possible effect.
  std::optional<std::string> inflight_cp, inflight_remove;
  std::optional<uint64_t> inflight_size;
  std::string error;  // an unexpected error (not caused by the cut)
};

std::unique_ptr<Tracker> OpenOn(FaultEnv& env) {
  OpenOptions o;
  o.env = &env;
  auto t = Tracker::Open(kDir, o);
  return t ? std::move(t).value() : nullptr;
}

// Runs `plan` on `env` (whose cut point the caller armed) until the power
// goes or the plan ends; then the power goes anyway (the process dies
// without closing). The caller then calls PowerCut.
Outcome Execute(const Plan& plan, FaultEnv& env, const std::function<void()>& after_op = nullptr) {
  Outcome o;
  std::unique_ptr<Tracker> t;
  int next_name = 0;
  o.size = plan.disk_size;
  for (size_t i = 0; i < plan.ops.size(); ++i) {
    if (env.cut()) break;
    const Op& op = plan.ops[i];
    Status s;
    auto mark = [&](uint64_t off, uint64_t len) {
      o.touched.push_back({off, len, i});
      Status ms = t->Mark(off, len);
      if (ms.ok()) o.acked.push_back({off, len, i});
      return ms;
    };
    switch (op.kind) {
      case Kind::kCreate: {
        TrackerOptions to;
        to.disk_size = plan.disk_size;
        to.granularity_bytes = kGran;
        to.intent_log = plan.intent_log;
        to.intent_region_shift = plan.region_shift;
        to.env = &env;
        auto r = Tracker::Create(kDir, to);
        if (r) t = std::move(r).value();
        s = r.status();
        if (s.ok()) o.create_acked = true;
        break;
      }
      case Kind::kMark:
      case Kind::kMarkWide: {
        if (o.size == 0) break;
        uint64_t off = op.a % o.size;
        s = mark(off, std::min(op.b, o.size - off));
        break;
      }
      case Kind::kStripes: {
        // Every other region of a window, one mark each, then the whole
        // window at once: the last mark's pending regions are many disjoint
        // ranges (commits of several sectors), and the log grows.
        const uint64_t region = uint64_t{1} << plan.region_shift;
        const uint64_t regions = (o.size + region - 1) / region;
        if (regions < 2) break;
        const uint64_t first = op.a % regions, count = std::min(op.b, regions - first);
        for (uint64_t r = first + 1; s.ok() && r < first + count; r += 2) s = mark(r * region, 1);
        if (s.ok()) s = mark(first * region, std::min(count * region, o.size - first * region));
        break;
      }
      case Kind::kCheckpoint: {
        std::string name = "cp" + std::to_string(next_name++);
        o.inflight_cp = name;
        auto r = t->Checkpoint(name);
        s = r.status();
        if (s.ok()) o.cps.push_back({name, i});
        break;
      }
      case Kind::kRemove: {
        if (o.cps.empty()) break;
        size_t k = op.a % o.cps.size();
        o.inflight_remove = o.cps[k].name;
        s = t->Remove(o.cps[k].name);
        if (s.ok()) o.cps.erase(o.cps.begin() + static_cast<long>(k));
        break;
      }
      case Kind::kResize: {
        uint64_t old = o.size;
        o.inflight_size = op.a;
        if (op.a > old) o.touched.push_back({old, op.a - old, i});
        s = t->Resize(op.a);
        if (s.ok()) {
          o.size = op.a;
          o.shrinks.push_back({op.a, 0, i});
          if (op.a > old) o.acked.push_back({old, op.a - old, i});
        }
        break;
      }
      case Kind::kFlush:
        s = t->Flush();
        break;
      case Kind::kReopen: {
        s = t->Close();
        t.reset();
        if (s.ok()) {
          OpenOptions oo;
          oo.env = &env;
          auto r = Tracker::Open(kDir, oo);
          if (r) t = std::move(r).value();
          s = r.status();
        }
        break;
      }
    }
    if (!s.ok()) {
      o.inflight = i;
      if (!env.cut()) o.error = "op " + std::to_string(i) + " " + op.Describe() + ": " + s.ToString();
      break;
    }
    o.inflight_cp.reset();
    o.inflight_remove.reset();
    o.inflight_size.reset();
    if (after_op) after_op();
    if (!t) break;
  }
  // The power goes now if it has not yet: the process dies without Close
  // (the destructor's Close fails on the dead Env and writes nothing).
  if (!env.cut()) env.CutAfter(1);
  t.reset();
  if (o.inflight == SIZE_MAX && env.cut()) {
    // Cut between ops (or in the destructor): the next op never started.
    o.inflight_cp.reset();
    o.inflight_remove.reset();
    o.inflight_size.reset();
  }
  return o;
}

// Counts mutating calls of a full run and returns them; also reports
// whether the logs it left show growth and multi-sector commits.
struct DryRun {
  uint64_t calls = 0;
  bool grew = false, multi_sector = false;
  std::string error;
};
DryRun Dry(const Plan& plan) {
  FaultEnv env;
  DryRun d;
  // After every op, look at the live intent logs: did one grow, did a batch
  // fill a sector (n = 40 at byte 8) and continue in the next?
  auto inspect = [&] {
    auto names = env.ListDir(kDir);
    if (!names) return;
    for (const auto& n : *names) {
      if (n.rfind("intent-", 0) != 0 || n.find(".tmp.") != std::string::npos) continue;
      auto bytes = env.Contents(kDir + "/" + n);
      auto c = tracker_internal::DecodeIntentLog(*bytes, n);
      if (!c) continue;
      d.grew |= c->header.capacity > tracker_internal::kIntentInitialCapacity;
      for (uint64_t k = 1; k <= c->commits; ++k) {
        d.multi_sector |= (*bytes)[k * tracker_internal::kIntentSectorSize + 8] ==
                          tracker_internal::kIntentSectorEntries;
      }
    }
  };
  Outcome o = Execute(plan, env, inspect);
  d.calls = env.MutatingCalls();  // includes the failing call of the final cut
  d.error = o.error;
  return d;
}

ExtentSet Covering(const std::vector<Mark>& ms, uint64_t size, uint32_t shift, size_t max_time) {
  ExtentSet s = ExtentSet::Create(size, kGran).value();
  const uint64_t region = uint64_t{1} << shift;
  for (const Mark& m : ms) {
    if (m.time > max_time) continue;
    uint64_t a = m.off / region * region, b = (m.off + m.len + region - 1) / region * region;
    if (a >= size) continue;
    (void)s.Add(a, std::min(b, size) - a);
  }
  return s;
}

struct Stats {
  uint64_t runs = 0, marks_checked = 0, unknown_answers = 0, absent_creates = 0;
  std::map<std::string, uint64_t> cut_in;  // op kind the cut hit
};

// Checks the reopened state against the outcome; "" when it holds.
std::string Check(const Plan& plan, const Outcome& o, FaultEnv& env, Stats* st) {
  if (!o.error.empty()) return "unexpected error: " + o.error;
  OpenOptions oo;
  oo.env = &env;
  auto opened = Tracker::Open(kDir, oo);
  if (!opened) {
    if (o.create_acked || opened.error().code() != StatusCode::kNotFound) {
      return "reopen failed: " + opened.error().ToString();
    }
    // An interrupted create left no tracker: a new one can be created over
    // whatever it did leave.
    TrackerOptions to;
    to.disk_size = plan.disk_size;
    to.env = &env;
    auto c = Tracker::Create(kDir, to);
    if (!c) return "create after an interrupted create failed: " + c.error().ToString();
    ++st->absent_creates;
    return "";
  }
  std::unique_ptr<Tracker> t = std::move(opened).value();
  const RecoveryInfo& rec = t->recovery();
  // Checkpoints: the acknowledged ones, plus or minus the in-flight one.
  std::vector<std::string> want, alt, got;
  for (const Cp& c : o.cps) want.push_back(c.name);
  alt = want;
  if (o.inflight_cp) alt.push_back(*o.inflight_cp);
  if (o.inflight_remove) alt.erase(std::remove(alt.begin(), alt.end(), *o.inflight_remove), alt.end());
  for (const CheckpointInfo& c : t->List()) got.push_back(c.name);
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += x + " ";
    return s;
  };
  if (got != want && got != alt) {
    return "checkpoints after reopen [" + join(got) + "], expected [" + join(want) + "] or [" + join(alt) + "]";
  }
  const uint64_t size = t->disk_size();
  if (size != o.size && !(o.inflight_size && size == *o.inflight_size)) {
    return "disk size " + std::to_string(size) + " after reopen, expected " + std::to_string(o.size);
  }
  std::map<std::string, size_t> time;
  for (const Cp& c : o.cps) time[c.name] = c.time;
  if (o.inflight_cp) time[*o.inflight_cp] = o.inflight;
  // Everything a mark or grow may have touched (up to the in-flight op).
  ExtentSet allowed = Covering(o.touched, size, plan.region_shift, o.inflight);
  // A mark is clipped by every shrink after it: in a sealed generation for
  // good; the active generation gets the area back from a later grow, so
  // ChangedSince clips only to the final size.
  auto covers = [&](const ExtentSet& got_set, size_t after, size_t upto, const std::string& what) -> std::string {
    const bool sealed = upto != SIZE_MAX;
    for (const Mark& m : o.acked) {
      if (m.time <= after || m.time > upto) continue;
      uint64_t limit = size;
      if (sealed) {
        for (const Mark& r : o.shrinks) {
          if (r.time > m.time) limit = std::min(limit, r.off);
        }
      }
      if (m.off >= limit) continue;
      ++st->marks_checked;
      uint64_t len = std::min(m.len, limit - m.off);
      if (!got_set.ContainsRange(m.off, len)) {
        return what + " lacks the acknowledged mark [" + std::to_string(m.off) + ", +" + std::to_string(len) +
               ") of op " + std::to_string(m.time) + " (" + plan.ops[m.time].Describe() + ")";
      }
    }
    auto extra = ExtentSet::Difference(got_set, allowed);
    if (extra && !extra->empty()) {
      return what + " reports " + std::to_string(extra->ByteCount()) + " bytes no mark touched, first at " +
             std::to_string(extra->ToExtents()[0].offset);
    }
    return "";
  };
  for (size_t i = 0; i < got.size(); ++i) {
    auto since = t->ChangedSince(got[i]);
    if (!since) {
      const bool allowed_unknown = !plan.intent_log && since.error().code() == StatusCode::kUnknownState &&
                                   rec.active_unknown && !rec.clean_shutdown;
      if (!allowed_unknown) return "ChangedSince(" + got[i] + "): " + since.error().ToString();
      ++st->unknown_answers;
    } else {
      std::string e = covers(*since, time[got[i]], SIZE_MAX, "ChangedSince(" + got[i] + ")");
      if (!e.empty()) return e;
    }
    if (i + 1 < got.size()) {
      auto between = t->ChangedBetween(got[i], got[i + 1]);
      if (!between) return "ChangedBetween(" + got[i] + ", " + got[i + 1] + "): " + between.error().ToString();
      std::string e = covers(*between, time[got[i]], time[got[i + 1]],
                             "ChangedBetween(" + got[i] + ", " + got[i + 1] + ")");
      if (!e.empty()) return e;
    }
  }
  if (plan.intent_log && (rec.active_unknown || !rec.problems.empty())) {
    return "intent log on, yet after a clean power cut: " + (rec.problems.empty() ? "unknown" : rec.problems[0]);
  }
  // The read-write open removed its leftovers: no temporaries, one intent log.
  auto names = env.ListDir(kDir);
  if (!names) return "listing failed";
  int logs = 0;
  for (const auto& n : *names) {
    if (n.find(".tmp.") != std::string::npos) return "leftover " + n + " after a read-write open";
    logs += n.rfind("intent-", 0) == 0;
  }
  if (logs != (plan.intent_log ? 1 : 0)) return std::to_string(logs) + " intent logs after a read-write open";
  // And it works.
  if (size > 0 && !t->Mark(0, 1).ok()) return "mark after recovery failed";
  if (!t->Checkpoint("after-cut").has_value()) return "checkpoint after recovery failed";
  if (!t->Close().ok()) return "close after recovery failed";
  t = OpenOn(env);
  if (!t || !t->recovery().clean_shutdown) return "reopen after recovery not clean";
  return "";
}

// One run: arm the cut, execute, cut, check.
std::string RunOne(const Plan& plan, uint64_t cut, CutMode mode, Stats* st) {
  FaultEnv env;
  env.CutAfter(cut);
  Outcome o = Execute(plan, env);
  env.PowerCut(mode);
  ++st->runs;
  st->cut_in[o.inflight < plan.ops.size() ? KindName(plan.ops[o.inflight].kind) : "between ops"]++;
  return Check(plan, o, env, st);
}

// Drops operations while some cut point (same mode) still fails.
std::pair<Plan, uint64_t> Shrink(Plan plan, uint64_t cut, CutMode mode) {
  Stats scratch;
  for (bool progress = true; progress;) {
    progress = false;
    for (size_t i = plan.ops.size() - 1; i >= 1; --i) {
      Plan smaller = plan;
      smaller.ops.erase(smaller.ops.begin() + static_cast<long>(i));
      DryRun d = Dry(smaller);
      for (uint64_t c = 1; c <= d.calls; ++c) {
        if (!RunOne(smaller, c, mode, &scratch).empty()) {
          plan = smaller;
          cut = c;
          progress = true;
          break;
        }
      }
    }
  }
  return {plan, cut};
}

TEST(TrackerPowerTest, RandomCutsNeverLoseAnAcknowledgedOperation) {
  const uint64_t seed = testing::TestSeed();
  std::printf("seed %llu (replay with STRATA_SEED)\n", static_cast<unsigned long long>(seed));
  SCOPED_TRACE("seed " + std::to_string(seed));
  int plans = kDefaultPlans;
  if (const char* e = std::getenv("STRATA_POWER_PLANS")) plans = std::atoi(e);
  std::mt19937_64 rng(seed);
  Stats st;
  uint64_t cut_points = 0, violations = 0, min_calls = UINT64_MAX, max_calls = 0;
  bool grew = false, multi = false;
  int intent_off = 0;
  for (int pi = 0; pi < plans; ++pi) {
    const Plan plan = MakePlan(rng());
    intent_off += !plan.intent_log;
    DryRun d = Dry(plan);
    ASSERT_TRUE(d.error.empty()) << "plan " << pi << " seed " << plan.seed << ": " << d.error;
    grew |= d.grew;
    multi |= d.multi_sector;
    min_calls = std::min(min_calls, d.calls);
    max_calls = std::max(max_calls, d.calls);
    for (int k = 0; k < kCutsPerPlan; ++k) {
      const uint64_t cut = 1 + rng() % d.calls;  // d.calls: the power goes after the last op
      ++cut_points;
      for (CutMode mode : kModes) {
        std::string err = RunOne(plan, cut, mode, &st);
        if (err.empty()) continue;
        ++violations;
        auto [small, small_cut] = Shrink(plan, cut, mode);
        std::string ops;
        for (const Op& op : small.ops) ops += op.Describe() + "; ";
        Stats scratch;
        ADD_FAILURE() << "seed " << seed << " plan " << pi << " (plan seed " << plan.seed << ", intent log "
                      << (plan.intent_log ? "on" : "off") << ") cut at call " << cut << " of " << d.calls
                      << ", mode " << ModeName(mode) << ": " << err << "\nshrunk to " << small.ops.size()
                      << " ops, cut at call " << small_cut << ": " << RunOne(small, small_cut, mode, &scratch)
                      << "\n  " << ops;
        if (violations >= 3) return;
      }
    }
  }
  std::string where;
  for (const auto& [k, v] : st.cut_in) where += k + " " + std::to_string(v) + ", ";
  std::printf(
      "%d plans (%d with the intent log off), %llu cut points x 3 modes = %llu power cuts (%llu..%llu mutating calls per plan); "
      "%llu acknowledged-mark checks; %llu unknown answers (intent log off); %llu creates cut before "
      "they returned; violations %llu\ncut landed in: %s\n",
      plans, intent_off, static_cast<unsigned long long>(cut_points), static_cast<unsigned long long>(st.runs),
      static_cast<unsigned long long>(min_calls), static_cast<unsigned long long>(max_calls),
      static_cast<unsigned long long>(st.marks_checked), static_cast<unsigned long long>(st.unknown_answers),
      static_cast<unsigned long long>(st.absent_creates), static_cast<unsigned long long>(violations),
      where.c_str());
  EXPECT_EQ(violations, 0u);
  EXPECT_TRUE(grew) << "no plan grew an intent log";
  EXPECT_TRUE(multi) << "no plan made a multi-sector commit";
}

}  // namespace
}  // namespace strata
