// Unit tests for the quiesce coordinator with the fake backend: the exact
// handle/counting sequences of issue 6, deadlines, safety refusals, hooks,
// target resolution over a fake sysfs tree, and a random model check.
#include "strata/quiesce.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <fstream>
#include <random>
#include <thread>

#include "engine/quiesce/hooks.h"
#include "engine/quiesce/journal.h"
#include "engine/quiesce/process.h"
#include "strata/checksum.h"
#include "strata/quiesce_resolve.h"
#include "tests/quiesce_fake_system.h"
#include "tests/test_util.h"

namespace strata::quiesce {
namespace {

namespace fs = std::filesystem;
using strata::testing::TempDir;
using namespace std::chrono_literals;

struct Fixture {
  FakeSystem sys;
  std::shared_ptr<FakeBackend::State> state = std::make_shared<FakeBackend::State>();
  std::unique_ptr<Coordinator> c;
  explicit Fixture(const std::string& confine) {
    c = std::make_unique<Coordinator>(std::make_unique<FakeBackend>(state), sys.Options(confine));
  }
  HandleId Freeze(std::vector<std::string> targets, std::chrono::milliseconds deadline = 10s) {
    FreezeRequest r;
    r.targets = std::move(targets);
    r.deadline = deadline;
    auto h = c->Freeze(r);
    EXPECT_TRUE(h.has_value()) << h.status().ToString();
    return h.has_value() ? *h : 0;
  }
};

std::unique_ptr<Fixture> MakeFixture(const std::string& confine = "/fake") {
  return std::make_unique<Fixture>(confine);
}

using Log = std::vector<std::string>;
using Counts = std::map<std::string, int>;

TEST(QuiesceCoordinator, InterleavedThenNestedHandlesExactSequence) {
  auto f = MakeFixture();
  // Interleaved: freeze A -> 1, freeze B -> 2, thaw 1, thaw 2.
  EXPECT_EQ(f->Freeze({"vda"}), 1u);
  EXPECT_EQ(f->Freeze({"vdb"}), 2u);
  ASSERT_TRUE(f->c->Thaw(1).has_value());
  EXPECT_EQ(f->c->Counts(), (Counts{{"/fake/b", 1}}));
  ASSERT_TRUE(f->c->Thaw(2).has_value());
  // Nested: freeze A -> 3, freeze B -> 4, thaw 4, thaw 3.
  EXPECT_EQ(f->Freeze({"vda"}), 3u);
  EXPECT_EQ(f->Freeze({"vdb"}), 4u);
  auto r4 = f->c->Thaw(4);
  ASSERT_TRUE(r4.has_value());
  EXPECT_EQ(r4->thawed, (std::vector<std::string>{"/fake/b"}));
  auto r3 = f->c->Thaw(3);
  ASSERT_TRUE(r3.has_value());
  EXPECT_EQ(r3->thawed, (std::vector<std::string>{"/fake/a"}));
  EXPECT_FALSE(r3->expired);
  EXPECT_EQ(f->state->log,
            (Log{"freeze /fake/a", "freeze /fake/b", "thaw /fake/a", "thaw /fake/b",
                 "freeze /fake/a", "freeze /fake/b", "thaw /fake/b", "thaw /fake/a"}));
  EXPECT_TRUE(f->c->Counts().empty());
}

TEST(QuiesceCoordinator, CountingSequenceFromIssue) {
  auto f = MakeFixture();
  // freeze A,B -> 1 [A:1 B:1]
  EXPECT_EQ(f->Freeze({"vda", "vdb"}), 1u);
  EXPECT_EQ(f->c->Counts(), (Counts{{"/fake/a", 1}, {"/fake/b", 1}}));
  // freeze A -> 2 [A:2 B:1]: already frozen, not an error, no backend call
  EXPECT_EQ(f->Freeze({"vda"}), 2u);
  EXPECT_EQ(f->c->Counts(), (Counts{{"/fake/a", 2}, {"/fake/b", 1}}));
  // thaw 1 -> thaws B [A:1 B:0]
  auto r1 = f->c->Thaw(1);
  ASSERT_TRUE(r1.has_value());
  EXPECT_EQ(r1->thawed, (std::vector<std::string>{"/fake/b"}));
  EXPECT_EQ(f->c->Counts(), (Counts{{"/fake/a", 1}}));
  // thaw 2 -> thaws A
  auto r2 = f->c->Thaw(2);
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->thawed, (std::vector<std::string>{"/fake/a"}));
  // Freeze order is reverse mount order, thaw order mount order.
  EXPECT_EQ(f->state->log, (Log{"freeze /fake/b /fake/a", "thaw /fake/b", "thaw /fake/a"}));
  EXPECT_TRUE(f->c->Counts().empty());
}

TEST(QuiesceCoordinator, ThawUnknownOrThawedHandleIsErrorAndChangesNothing) {
  auto f = MakeFixture();
  HandleId h = f->Freeze({"vda"});
  auto bad = f->c->Thaw(h + 41);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kNotFound);
  EXPECT_NE(bad.error().message().find("unknown or already thawed"), std::string::npos);
  EXPECT_EQ(f->c->Counts(), (Counts{{"/fake/a", 1}}));
  ASSERT_TRUE(f->c->Thaw(h).has_value());
  auto again = f->c->Thaw(h);
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), StatusCode::kNotFound);
  EXPECT_EQ(f->state->log, (Log{"freeze /fake/a", "thaw /fake/a"}));
}

TEST(QuiesceCoordinator, BadRequestsAreRejectedWithoutBackendCalls) {
  auto f = MakeFixture();
  FreezeRequest r;
  auto h = f->c->Freeze(r);
  ASSERT_FALSE(h.has_value());
  EXPECT_EQ(h.error().message(), "no quiesce targets given");
  r.targets = {"vda"};
  r.deadline = 0ms;
  h = f->c->Freeze(r);
  ASSERT_FALSE(h.has_value());
  EXPECT_EQ(h.error().code(), StatusCode::kInvalidArgument);
  r.deadline = std::chrono::hours(25);
  EXPECT_FALSE(f->c->Freeze(r).has_value());
  r.deadline = 1s;
  r.targets = {"vda", "no-such-disk-xyz"};
  h = f->c->Freeze(r);
  ASSERT_FALSE(h.has_value());
  EXPECT_EQ(h.error().code(), StatusCode::kNotFound);
  r.targets = {"vda"};
  r.hook_dir = "/nonexistent-hook-dir-xyz";
  h = f->c->Freeze(r);
  ASSERT_FALSE(h.has_value());
  EXPECT_EQ(h.error().code(), StatusCode::kNotFound);
  EXPECT_TRUE(f->state->log.empty());
  EXPECT_TRUE(f->c->Handles().empty());
}

TEST(QuiesceCoordinator, DeadlineExpiresThawsAndReportsNotQuiesced) {
  auto f = MakeFixture();
  HandleId longer = f->Freeze({"vda"}, 20s);
  HandleId shorter = f->Freeze({"vda", "vdb"}, 100ms);
  EXPECT_TRUE(f->c->Quiesced(shorter));
  auto until = std::chrono::steady_clock::now() + 5s;
  while (f->c->Quiesced(shorter) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_FALSE(f->c->Quiesced(shorter));
  // B was only held by the expired handle; A is still held by `longer`.
  EXPECT_EQ(f->c->Counts(), (Counts{{"/fake/a", 1}}));
  EXPECT_EQ(f->state->log, (Log{"freeze /fake/a", "freeze /fake/b", "thaw /fake/b"}));
  auto r = f->c->Thaw(shorter);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->expired);
  EXPECT_TRUE(r->thawed.empty());
  EXPECT_GE(r->frozen_for, 100ms);
  EXPECT_LT(r->frozen_for, 4s);
  auto l = f->c->Thaw(longer);
  ASSERT_TRUE(l.has_value());
  EXPECT_FALSE(l->expired);
  EXPECT_EQ(f->state->log.back(), "thaw /fake/a");
}

TEST(QuiesceCoordinator, DestructorThawsEverything) {
  auto f = MakeFixture();
  f->Freeze({"vda"});
  f->Freeze({"vdb", "vda"});
  f->c.reset();
  EXPECT_FALSE(f->state->frozen["/fake/a"]);
  EXPECT_FALSE(f->state->frozen["/fake/b"]);
}

TEST(QuiesceCoordinator, RefusesRootAndProtectedUnlessForcedAndAlwaysConfinement) {
  FakeSystem sys;
  auto state = std::make_shared<FakeBackend::State>();
  auto opts = sys.Options("");
  opts.protected_paths = {sys.dir().File("tracker-state/not-yet-created")};
  Coordinator c(std::make_unique<FakeBackend>(state), opts);
  FreezeRequest r;
  r.targets = {"rootdisk"};
  auto h = c.Freeze(r);
  ASSERT_FALSE(h.has_value());
  EXPECT_EQ(h.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(h.error().message().find("protected path"), std::string::npos) << h.error().message();
  r.targets = {"vda", "/"};
  h = c.Freeze(r);
  ASSERT_FALSE(h.has_value());
  EXPECT_TRUE(state->log.empty());
  r.force = true;
  h = c.Freeze(r);
  ASSERT_TRUE(h.has_value()) << h.error().ToString();
  EXPECT_EQ(state->log, (Log{"freeze /fake/a /"}));
  ASSERT_TRUE(c.Thaw(*h).has_value());

  // Root alone (no protected paths) names the root filesystem.
  Coordinator c2(std::make_unique<FakeBackend>(state), sys.Options(""));
  r.force = false;
  r.targets = {"rootdisk"};
  h = c2.Freeze(r);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.error().message().find("root filesystem"), std::string::npos);

  // Confinement holds even with force.
  Coordinator c3(std::make_unique<FakeBackend>(state), sys.Options("/fake/a"));
  r.force = true;
  r.targets = {"vda", "vdb"};
  h = c3.Freeze(r);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.error().message().find("outside /fake/a"), std::string::npos);
  EXPECT_EQ(state->log.size(), 2u);  // nothing new
}

TEST(QuiesceCoordinator, BackendFailureChangesNothing) {
  auto f = MakeFixture();
  f->state->fail_freeze = {"/fake/b"};
  HandleId a = f->Freeze({"vda"});
  FreezeRequest r;
  r.targets = {"vda", "vdb"};
  auto h = f->c->Freeze(r);
  ASSERT_FALSE(h.has_value());
  EXPECT_EQ(f->c->Counts(), (Counts{{"/fake/a", 1}}));
  EXPECT_EQ(f->c->Handles().size(), 1u);
  ASSERT_TRUE(f->c->Thaw(a).has_value());
  EXPECT_EQ(f->state->log, (Log{"freeze /fake/a", "freeze-failed /fake/b", "thaw /fake/a"}));
}

TEST(QuiesceResolve, DisksPartitionsHoldersAndBindMounts) {
  FakeSystem sys;
  auto res = ResolveTargets({"vdc"}, sys.mountinfo(), sys.sys());
  ASSERT_TRUE(res.has_value()) << res.error().ToString();
  ASSERT_EQ(res->filesystems.size(), 2u);
  EXPECT_EQ(res->filesystems[0].mount_point, "/fake/c");
  EXPECT_EQ(res->filesystems[1].mount_point, "/fake/d");  // bind /fake/d2 is the same fs
  EXPECT_EQ(res->filesystems[1].disks, (std::vector<std::string>{"vdc2", "vdd"}));
  // A filesystem spread over two disks is selected by either disk.
  res = ResolveTargets({"vdd"}, sys.mountinfo(), sys.sys());
  ASSERT_TRUE(res.has_value());
  ASSERT_EQ(res->filesystems.size(), 1u);
  EXPECT_EQ(res->filesystems[0].mount_point, "/fake/d");
  res = ResolveTargets({"dm-0", "vdc1", "vda"}, sys.mountinfo(), sys.sys());
  ASSERT_TRUE(res.has_value());
  ASSERT_EQ(res->filesystems.size(), 3u);  // mountinfo order
  EXPECT_EQ(res->filesystems[0].mount_point, "/fake/a");
  EXPECT_EQ(res->filesystems[1].mount_point, "/fake/c");
  EXPECT_EQ(res->filesystems[2].mount_point, "/fake/d");
  std::string text = res->ToString();
  EXPECT_NE(text.find("would freeze /fake/d [xfs /dev/mapper/vg-lv 251:0 on vdc2 vdd]"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("vdc1 (block device vdc1) -> /fake/c"), std::string::npos) << text;

  auto none = ResolveTargets({"no-such-disk-xyz"}, sys.mountinfo(), sys.sys());
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), StatusCode::kNotFound);
  // vdb exists but a disk with nothing mounted is an error too.
  fs::create_directories(sys.sys() + "/class/block/vde");
  WriteText(sys.sys() + "/class/block/vde/dev", "250:64\n");
  auto unmounted = ResolveTargets({"vde"}, sys.mountinfo(), sys.sys());
  ASSERT_FALSE(unmounted.has_value());
  EXPECT_NE(unmounted.error().message().find("no mounted filesystem"), std::string::npos);
}

TEST(QuiesceResolve, ParseMountInfoEscapesOptionalFieldsAndErrors) {
  auto m = ParseMountInfo(
      "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:2 - ext3 /dev/root "
      "rw,errors=continue\n\n"
      "37 35 0:5 / /proc rw - proc proc rw\n",
      "mi");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  ASSERT_EQ(m->size(), 2u);
  EXPECT_EQ((*m)[0].mount_point, "/mnt/with space");
  EXPECT_EQ((*m)[0].root, "/mnt1");
  EXPECT_EQ((*m)[0].major, 98u);
  EXPECT_EQ((*m)[0].fs_type, "ext3");
  EXPECT_EQ((*m)[0].source, "/dev/root");
  EXPECT_EQ((*m)[1].fs_type, "proc");
  auto bad = ParseMountInfo("1 2 3:4 / /b rw - ext4 /dev/x rw\n1 2 3:4 / /a rw\n", "mi");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kCorruption);
  EXPECT_EQ(bad.error().message(), "mi: line 2: not a mountinfo line (libmount cannot parse it)");
  bad = ParseMountInfo("1 2 3:4 / /b rw - ext4 /dev/x rw\n9 2 3x4 / /b rw - ext4 /dev/x rw\n", "mi");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().message(), "mi: line 2: not a mountinfo line (libmount cannot parse it)");
  bad = ParseMountInfo("1 2 3:4 / relative rw - ext4 /dev/x rw\n", "mi");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().message(), "mi: mount id 1: mount point 'relative' is not absolute");
  EXPECT_TRUE(ParseMountInfo("", "mi").has_value());
  // Real system mountinfo parses, from text and from the file.
  std::ifstream real("/proc/self/mountinfo");
  std::string text((std::istreambuf_iterator<char>(real)), {});
  EXPECT_TRUE(ParseMountInfo(text, "/proc/self/mountinfo").has_value());
  auto from_file = ReadMountInfo("/proc/self/mountinfo");
  ASSERT_TRUE(from_file.has_value()) << from_file.error().ToString();
  EXPECT_FALSE(from_file->empty());
  auto missing = ReadMountInfo("/nonexistent/mountinfo");
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.error().message().find("/nonexistent/mountinfo"), std::string::npos);
  // Mutated mountinfo text never crashes; it parses or fails with a line.
  uint64_t seed = strata::testing::TestSeed();
  SCOPED_TRACE("STRATA_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 5000 && !text.empty(); ++i) {
    std::string m = text.substr(0, std::min<size_t>(text.size(), 600));
    for (int k = 0; k < 3; ++k) m[rng() % m.size()] = static_cast<char>(rng() % 128);
    auto r = ParseMountInfo(m, "fuzz");
    if (!r.has_value()) {
      EXPECT_EQ(r.error().message().rfind("fuzz: ", 0), 0u) << r.error().message();
    }
  }
  EXPECT_TRUE(PathWithin("/a/b", "/a"));
  EXPECT_TRUE(PathWithin("/a", "/a/"));
  EXPECT_FALSE(PathWithin("/ab", "/a"));
  EXPECT_FALSE(PathWithin("/", "/a"));
}

// Writes a hook that appends "<name> <arg>" to `log` and exits with `code`
// for the argument `fail_on` (or 0).
void WriteHook(const std::string& path, const std::string& log, const std::string& fail_on = "",
               int code = 0) {
  std::string name = fs::path(path).filename().string();
  WriteText(path, "#!/bin/sh\necho \"" + name + " $1\" >> '" + log + "'\n" +
                      (fail_on.empty() ? ""
                                       : "[ \"$1\" = " + fail_on + " ] && exit " +
                                             std::to_string(code) + "\n") +
                      "exit 0\n");
  ::chmod(path.c_str(), 0755);
}

TEST(QuiesceHooks, OrderRollbackAndQemuIgnoreRules) {
  auto f = MakeFixture();
  TempDir t;
  std::string hooks = t.File("hooks"), log = t.File("log");
  fs::create_directories(hooks);
  ::chmod(hooks.c_str(), 0755);  // whatever the umask: hooks must not be group-writable
  WriteHook(hooks + "/10-db", log);
  WriteHook(hooks + "/20-app", log);
  WriteHook(hooks + "/30-cache", log);
  WriteHook(hooks + "/15-old.bak", log);  // ignored like QEMU's fsfreeze-hook
  WriteText(hooks + "/12-notexec", "#!/bin/sh\necho no >> '" + log + "'\n");
  auto listed = ListHooks(hooks);
  ASSERT_TRUE(listed.has_value());
  EXPECT_EQ(listed->size(), 3u);

  FreezeRequest r;
  r.targets = {"vda"};
  r.hook_dir = hooks;
  auto h = f->c->Freeze(r);
  ASSERT_TRUE(h.has_value()) << h.error().ToString();
  EXPECT_EQ(ReadText(log), "10-db freeze\n20-app freeze\n30-cache freeze\n");
  ASSERT_TRUE(f->c->Thaw(*h).has_value());
  EXPECT_EQ(ReadText(log),
            "10-db freeze\n20-app freeze\n30-cache freeze\n30-cache thaw\n20-app thaw\n"
            "10-db thaw\n");

  // A failing freeze hook aborts: earlier hooks are thawed, no fs is frozen.
  WriteText(log, "");
  WriteHook(hooks + "/20-app", log, "freeze", 3);
  h = f->c->Freeze(r);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.error().message().find("20-app freeze: exit status 3"), std::string::npos)
      << h.error().message();
  EXPECT_EQ(ReadText(log), "10-db freeze\n20-app freeze\n10-db thaw\n");
  EXPECT_EQ(f->state->log, (Log{"freeze /fake/a", "thaw /fake/a"}));
  EXPECT_TRUE(f->c->Counts().empty());

  // A hanging hook is killed at its timeout and aborts the same way.
  WriteText(log, "");
  WriteText(hooks + "/20-app", "#!/bin/sh\necho \"20-app $1\" >> '" + log +
                                   "'\n[ \"$1\" = freeze ] && exec sleep 30\nexit 0\n");
  r.hook_timeout = 200ms;
  auto t0 = std::chrono::steady_clock::now();
  h = f->c->Freeze(r);
  ASSERT_FALSE(h.has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_NE(h.error().message().find("timed out"), std::string::npos) << h.error().message();
  EXPECT_EQ(ReadText(log), "10-db freeze\n20-app freeze\n10-db thaw\n");
}

TEST(QuiesceHooks, RefusesHooksOthersCouldChange) {
  auto f = MakeFixture();
  TempDir t;
  std::string hooks = t.File("hooks"), log = t.File("log");
  fs::create_directories(hooks);
  ::chmod(hooks.c_str(), 0755);  // whatever the umask: hooks must not be group-writable
  WriteHook(hooks + "/10-db", log);
  WriteHook(hooks + "/20-app", log);
  ASSERT_TRUE(ListHooks(hooks).has_value());
  FreezeRequest r;
  r.targets = {"vda"};
  r.hook_dir = hooks;
  auto expect_refused = [&](const std::string& message) {
    auto listed = ListHooks(hooks);
    ASSERT_FALSE(listed.has_value()) << message;
    EXPECT_EQ(listed.error().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(listed.error().message(), message);
    auto h = f->c->Freeze(r);
    ASSERT_FALSE(h.has_value());
    EXPECT_EQ(h.error().message(), message);
    EXPECT_EQ(ReadText(log), "") << "a hook ran";
    EXPECT_TRUE(f->state->log.empty());
  };
  ::chmod((hooks + "/20-app").c_str(), 0775);
  expect_refused("hook " + hooks + "/20-app: writable by group (mode 0775); refusing to run "
                 "hooks from it (chmod go-w)");
  ::chmod((hooks + "/20-app").c_str(), 0757);
  expect_refused("hook " + hooks + "/20-app: writable by others (mode 0757); refusing to run "
                 "hooks from it (chmod go-w)");
  ::chmod((hooks + "/20-app").c_str(), 0755);
  ::chmod(hooks.c_str(), 0777);
  expect_refused("hook directory " + hooks + ": writable by others (mode 0777); refusing to run "
                 "hooks from it (chmod go-w)");
  ::chmod(hooks.c_str(), 0755);
  // A file we would not run is not checked: a writable backup file is fine.
  WriteHook(hooks + "/30-old.bak", log);
  ::chmod((hooks + "/30-old.bak").c_str(), 0777);
  EXPECT_TRUE(ListHooks(hooks).has_value());
  if (::geteuid() != 0) GTEST_SKIP() << "ownership checks need root (chown)";
  ASSERT_EQ(::chown((hooks + "/10-db").c_str(), 1000, 0), 0);
  expect_refused("hook " + hooks + "/10-db: owned by uid 1000, not root; refusing to run hooks "
                 "from it");
  ASSERT_EQ(::chown((hooks + "/10-db").c_str(), 0, 0), 0);
  ASSERT_EQ(::chown(hooks.c_str(), 1000, 0), 0);
  expect_refused("hook directory " + hooks + ": owned by uid 1000, not root; refusing to run "
                 "hooks from it");
  ASSERT_EQ(::chown(hooks.c_str(), 0, 0), 0);
  EXPECT_TRUE(ListHooks(hooks).has_value());
}

TEST(QuiesceRunQuiesced, InsideRunsFrozenExecRunsAndExpiryIsReported) {
  auto f = MakeFixture();
  TempDir t;
  QuiesceRequest q;
  q.targets = {"vda", "vdb"};
  q.exec_command = "echo snap > " + t.File("exec-ran");
  bool was_frozen = false;
  auto r = RunQuiesced(*f->c, q, [&] {
    was_frozen = f->state->frozen["/fake/a"] && f->state->frozen["/fake/b"];
    return Status::Ok();
  });
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_TRUE(was_frozen);
  EXPECT_TRUE(r->quiesced);
  EXPECT_EQ(ReadText(t.File("exec-ran")), "snap\n");
  EXPECT_EQ(r->mount_points, (std::vector<std::string>{"/fake/a", "/fake/b"}));
  EXPECT_FALSE(f->state->frozen["/fake/a"]);

  // A window that outlives its deadline: the checkpoint is not quiesced.
  q.exec_command.clear();
  q.deadline = 50ms;
  r = RunQuiesced(*f->c, q, [] {
    std::this_thread::sleep_for(400ms);
    return Status::Ok();
  });
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->quiesced);
  EXPECT_GE(r->frozen_for, 50ms);
  EXPECT_LT(r->frozen_for, 400ms);

  // A failing exec or callback fails the call and still thaws.
  q.deadline = 10s;
  q.exec_command = "exit 7";
  r = RunQuiesced(*f->c, q, [] { return Status::Ok(); });
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("status 7"), std::string::npos);
  q.exec_command.clear();
  r = RunQuiesced(*f->c, q, [] { return Status::Corruption("tracker: boom"); });
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorruption);
  EXPECT_TRUE(f->c->Counts().empty());
  EXPECT_FALSE(f->state->frozen["/fake/a"]);
  EXPECT_TRUE(f->c->Handles().empty());
}

// Random freeze/thaw of subsets against a naive model of per-fs counts.
TEST(QuiesceCoordinator, RandomSequencesMatchNaiveCountModel) {
  uint64_t seed = strata::testing::TestSeed();
  SCOPED_TRACE("STRATA_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto f = MakeFixture();
  const std::vector<std::pair<std::string, std::string>> disks = {
      {"vda", "/fake/a"}, {"vdb", "/fake/b"}, {"vdc1", "/fake/c"}, {"dm-0", "/fake/d"}};
  std::map<HandleId, std::vector<std::string>> live;  // model: handle -> mounts
  for (int step = 0; step < 400; ++step) {
    if (live.empty() || rng() % 2) {
      std::vector<std::string> targets, mounts;
      for (const auto& [d, m] : disks) {
        if (rng() % 2) {
          targets.push_back(d);
          mounts.push_back(m);
        }
      }
      if (targets.empty()) continue;
      HandleId h = f->Freeze(targets);
      live[h] = mounts;
    } else {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % live.size()));
      ASSERT_TRUE(f->c->Thaw(it->first).has_value());
      live.erase(it);
    }
    Counts model;
    for (const auto& [h, ms] : live) {
      for (const auto& m : ms) ++model[m];
    }
    ASSERT_EQ(f->c->Counts(), model) << "step " << step;
    for (const auto& [d, m] : disks) {
      ASSERT_EQ(f->state->frozen[m], model.count(m) > 0) << m << " step " << step;
    }
  }
}

// ---- child processes: own process group, only stdio inherited ---------------

// Waits up to 10 s for `pid` (an orphan re-parented to us, the subreaper)
// and returns its wait status, or -1 if it is still running (then kills it).
int ReapOrphan(pid_t pid) {
  for (int i = 0; i < 1000; ++i) {
    int st = 0;
    pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) return st;
    std::this_thread::sleep_for(10ms);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return -1;
}

// A script that starts a sleeping grandchild, records its pid, then sleeps
// itself: the timeout must kill both.
std::string ForkingSleeper(const std::string& pidfile) {
  return "sleep 300 & echo $! > '" + pidfile + "'; exec sleep 300";
}

TEST(QuiesceProcess, HookTimeoutKillsItsSleepingGrandchild) {
  // Orphans re-parent to this process, so we can see how they died.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  auto f = MakeFixture();
  TempDir t;
  std::string hooks = t.File("hooks"), pidfile = t.File("grandchild.pid");
  fs::create_directories(hooks);
  ::chmod(hooks.c_str(), 0755);  // whatever the umask: hooks must not be group-writable
  WriteText(hooks + "/10-forks", "#!/bin/sh\n" + ForkingSleeper(pidfile) + "\n");
  ::chmod((hooks + "/10-forks").c_str(), 0755);
  FreezeRequest r;
  r.targets = {"vda"};
  r.hook_dir = hooks;
  r.hook_timeout = 300ms;
  auto h = f->c->Freeze(r);
  ASSERT_FALSE(h.has_value());
  EXPECT_NE(h.error().message().find("timed out after 300 ms (its process group was killed)"),
            std::string::npos)
      << h.error().message();
  pid_t grandchild = std::atoi(ReadText(pidfile).c_str());
  ASSERT_GT(grandchild, 1);
  int st = ReapOrphan(grandchild);
  ASSERT_NE(st, -1) << "the hook's grandchild " << grandchild << " outlived the timeout";
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << st;
  EXPECT_TRUE(f->state->log.empty());
}

TEST(QuiesceProcess, ExecTimeoutKillsItsSleepingGrandchild) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  auto f = MakeFixture();
  TempDir t;
  std::string pidfile = t.File("grandchild.pid");
  QuiesceRequest q;
  q.targets = {"vda"};
  q.exec_command = ForkingSleeper(pidfile);
  q.exec_timeout = 300ms;
  auto r = RunQuiesced(*f->c, q, nullptr);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("timed out"), std::string::npos) << r.error().message();
  pid_t grandchild = std::atoi(ReadText(pidfile).c_str());
  ASSERT_GT(grandchild, 1);
  int st = ReapOrphan(grandchild);
  ASSERT_NE(st, -1) << "the --exec command's grandchild outlived the timeout";
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << st;
  EXPECT_FALSE(f->state->frozen["/fake/a"]);
}

TEST(QuiesceProcess, ChildrenInheritOnlyStdioAndGetTheirOwnGroup) {
  TempDir t;
  std::string marker = t.File("not-for-children");
  WriteText(marker, "x");
  int leaky = ::open(marker.c_str(), O_RDONLY);  // deliberately without O_CLOEXEC
  ASSERT_GE(leaky, 0);
  std::string out = t.File("fds");
  auto rc = internal::RunProcess(
      {"/bin/sh", "-c",
       "ls -l /proc/$$/fd > '" + out + "' 2>&1; ps -o pgid= -p $$ >> '" + out +
           "'; echo pid $$ >> '" + out + "'"},
      10s);
  ::close(leaky);
  ASSERT_TRUE(rc.has_value()) << rc.error().ToString();
  EXPECT_EQ(*rc, 0);
  std::string fds = ReadText(out);
  EXPECT_EQ(fds.find(marker), std::string::npos) << "a descriptor leaked into the child:\n" << fds;
  EXPECT_NE(fds.find("0 -> /dev/null"), std::string::npos) << fds;
  // The shell leads its own process group: its pgid is its pid.
  size_t p = fds.find("pid ");
  ASSERT_NE(p, std::string::npos);
  std::string pid = fds.substr(p + 4, fds.find('\n', p) - p - 4);
  bool leads = fds.find(" " + pid + "\npid") != std::string::npos ||
               fds.find("\n" + pid + "\npid") != std::string::npos;
  EXPECT_TRUE(leads) << fds;
}

// ---- counted hooks -------------------------------------------------------

// Two handles share a hook directory: each hook runs "freeze" once, when the
// first handle is created, and "thaw" once, after the last handle's
// filesystems are thawed; in both thaw orders.
TEST(QuiesceHooks, CountedLikeFilesystemsInEitherThawOrder) {
  for (bool first_a : {true, false}) {
    SCOPED_TRACE(first_a ? "thaw A then B" : "thaw B then A");
    auto f = MakeFixture();
    TempDir t;
    std::string hooks = t.File("hooks"), log = t.File("log");
    fs::create_directories(hooks);
    ::chmod(hooks.c_str(), 0755);
    WriteHook(hooks + "/10-db", log);
    WriteHook(hooks + "/20-app", log);
    FreezeRequest ra, rb;
    ra.targets = {"vda"};
    rb.targets = {"vda", "vdb"};
    ra.hook_dir = rb.hook_dir = hooks;
    auto a = f->c->Freeze(ra);
    ASSERT_TRUE(a.has_value()) << a.error().ToString();
    EXPECT_EQ(ReadText(log), "10-db freeze\n20-app freeze\n");
    auto b = f->c->Freeze(rb);
    ASSERT_TRUE(b.has_value()) << b.error().ToString();
    EXPECT_EQ(ReadText(log), "10-db freeze\n20-app freeze\n") << "freeze hooks ran twice";
    ASSERT_TRUE(f->c->Thaw(first_a ? *a : *b).has_value());
    EXPECT_EQ(ReadText(log), "10-db freeze\n20-app freeze\n") << "thaw hooks ran too early";
    EXPECT_TRUE(f->state->frozen["/fake/a"]);
    ASSERT_TRUE(f->c->Thaw(first_a ? *b : *a).has_value());
    EXPECT_EQ(ReadText(log), "10-db freeze\n20-app freeze\n20-app thaw\n10-db thaw\n");
    EXPECT_FALSE(f->state->frozen["/fake/a"]);
    EXPECT_FALSE(f->state->frozen["/fake/b"]);
    // After the last thaw the next handle runs "freeze" again.
    auto c = f->c->Freeze(ra);
    ASSERT_TRUE(c.has_value());
    EXPECT_EQ(ReadText(log),
              "10-db freeze\n20-app freeze\n20-app thaw\n10-db thaw\n10-db freeze\n20-app freeze\n");
  }
}

// Expiry releases a handle's hook reference like a thaw does.
TEST(QuiesceHooks, ExpiryDropsTheReferenceAndTheLastHolderThaws) {
  auto f = MakeFixture();
  TempDir t;
  std::string hooks = t.File("hooks"), log = t.File("log");
  fs::create_directories(hooks);
  ::chmod(hooks.c_str(), 0755);
  WriteHook(hooks + "/10-db", log);
  FreezeRequest r;
  r.targets = {"vda"};
  r.hook_dir = hooks;
  auto keep = f->c->Freeze(r);
  r.deadline = 100ms;
  auto brief = f->c->Freeze(r);
  ASSERT_TRUE(keep.has_value() && brief.has_value());
  for (int i = 0; i < 300 && f->c->Quiesced(*brief); ++i) std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(ReadText(log), "10-db freeze\n");
  ASSERT_TRUE(f->c->Thaw(*keep).has_value());
  EXPECT_EQ(ReadText(log), "10-db freeze\n10-db thaw\n");
}

// ---- backends that cannot thaw part of their set ---------------------------

TEST(QuiesceCoordinator, PartialThawOnAnAllOrNothingBackendInterruptsTheOtherHandle) {
  auto f = MakeFixture();
  f->state->can_thaw_part = false;
  HandleId a = f->Freeze({"vda", "vdb"});
  HandleId b = f->Freeze({"vda"});
  HandleId c = f->Freeze({"vdc1"});  // frozen in a later call: also thawed by the backend
  EXPECT_TRUE(f->c->Quiesced(b));
  auto ra = f->c->Thaw(a);
  ASSERT_TRUE(ra.has_value()) << ra.error().ToString();
  EXPECT_TRUE(ra->quiesced());
  EXPECT_EQ(ra->thawed, (std::vector<std::string>{"/fake/b"}));
  // The backend thawed everything and the rest was frozen again.
  EXPECT_EQ(f->state->log, (Log{"freeze /fake/b /fake/a", "freeze /fake/c",
                                "thaw /fake/b /fake/a /fake/c", "freeze /fake/c /fake/a"}));
  EXPECT_TRUE(f->state->frozen["/fake/a"]);
  EXPECT_TRUE(f->state->frozen["/fake/c"]);
  // b and c had a gap: they are not quiesced, and say why.
  EXPECT_FALSE(f->c->Quiesced(b));
  EXPECT_FALSE(f->c->Quiesced(c));
  auto rb = f->c->Thaw(b);
  ASSERT_TRUE(rb.has_value());
  EXPECT_TRUE(rb->interrupted);
  EXPECT_FALSE(rb->quiesced());
  EXPECT_NE(rb->interruption.find("fake thawed /fake/a /fake/c and froze it again"),
            std::string::npos)
      << rb->interruption;
  // RunQuiesced reports the same verdict for the window it ran.
  QuiesceRequest q;
  q.targets = {"vdb"};
  auto r = RunQuiesced(*f->c, q, [&] {
    // Another handle over /fake/c ends inside our window: /fake/b has a gap.
    return f->c->Thaw(c).has_value() ? Status::Ok() : Status::Corruption("thaw c");
  });
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_FALSE(r->quiesced);
  EXPECT_NE(r->not_quiesced_reason.find("froze it again"), std::string::npos)
      << r->not_quiesced_reason;
  EXPECT_TRUE(f->c->Counts().empty());
  EXPECT_FALSE(f->state->frozen["/fake/b"]);
}

// ---- the journal ---------------------------------------------------------

TEST(QuiesceJournal, WrittenBeforeTheFreezeAndRemovedAfterTheThaw) {
  FakeSystem sys;
  TempDir jdir;
  auto state = std::make_shared<FakeBackend::State>();
  auto opts = sys.Options();
  opts.journal_dir = jdir.path();
  std::vector<std::string> seen;
  opts.on_step = [&](const char* step) {
    // What a process killed right here would leave for recovery.
    auto stale = StaleJournalEntries(jdir.path());
    std::string s = std::string(step) + ":";
    for (const auto& e : stale->entries) s += " " + e.mount_point;
    // Our own journal is locked by us, so it is not stale: read it directly.
    for (const auto& p : fs::directory_iterator(jdir.path())) {
      auto c = ParseJournal(ReadText(p.path()), p.path());
      if (c.has_value()) {
        for (const auto& e : c->outstanding) s += " " + e.mount_point;
      }
    }
    std::lock_guard<std::mutex> lock(state->mu);
    s += state->frozen["/fake/a"] ? " [a frozen]" : "";
    seen.push_back(s);
  };
  {
    Coordinator c(std::make_unique<FakeBackend>(state), opts);
    FreezeRequest r;
    r.targets = {"vda", "vdb"};
    auto h = c.Freeze(r);
    ASSERT_TRUE(h.has_value()) << h.error().ToString();
    ASSERT_TRUE(c.Thaw(*h).has_value());
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"journaled: /fake/b /fake/a",
                                            "frozen: /fake/b /fake/a [a frozen]",
                                            // thawed, but its T records are not written yet
                                            "thawed: /fake/b /fake/a", "unjournaled:"}));
  EXPECT_TRUE(fs::is_empty(jdir.path()));
}

// A version 1 line (test only): "<xxh3> <body>\n".
std::string V1Line(const std::string& body) {
  char sum[17];
  std::snprintf(sum, sizeof sum, "%016llx",
                static_cast<unsigned long long>(Xxh3_64(body.data(), body.size())));
  return std::string(sum) + " " + body + "\n";
}

TEST(QuiesceJournal, CodecRoundTripsOddNamesAndDetectsEveryFlippedByte) {
  std::vector<JournalEntry> entries = {
      {"fifreeze", "", 7, 3, "/mnt/with space\tand\nnewline\\"},
      {"qga", "/run/qga sock", 253, 1, "-"},
      {"fifreeze", "", 8, 1, "/"},
      // A record longer than one sector spans several.
      {"fifreeze", "", 8, 2, "/" + std::string(700, 'x')},
  };
  std::string records;
  uint64_t seq = 0;
  for (const auto& e : entries) records += EncodeJournalRecord('F', e, ++seq);
  records += EncodeJournalRecord('T', entries[2], ++seq);
  records += EncodeJournalRecord('T', entries[3], ++seq);
  ASSERT_EQ(records.size() % 512, 0u);
  std::string text = EncodeJournalHeader(4242, "boot-a", 512 + records.size()) + records;
  ASSERT_EQ(text.size() % 512, 0u);
  auto c = ParseJournal(text, "j");
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_EQ(c->version, 2);
  EXPECT_EQ(c->pid, 4242);
  EXPECT_EQ(c->boot_id, "boot-a");
  EXPECT_EQ(c->records, 6u);
  EXPECT_TRUE(c->bad_lines.empty()) << c->bad_lines[0];
  ASSERT_EQ(c->outstanding.size(), 2u);
  EXPECT_EQ(c->outstanding[0], entries[0]);
  EXPECT_EQ(c->outstanding[1], entries[1]);
  // One line per record: the odd names were escaped.
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 7);
  // Records after the committed end (written, header not yet rewritten:
  // their freeze never started) are not read, whole or cut short.
  std::string extra = EncodeJournalRecord('F', entries[2], 7);
  for (size_t cut : {size_t{0}, size_t{20}, extra.size()}) {
    auto more = ParseJournal(text + extra.substr(0, cut), "j");
    ASSERT_TRUE(more.has_value());
    EXPECT_TRUE(more->bad_lines.empty());
    EXPECT_EQ(more->outstanding.size(), 2u);
  }
  // Every single-byte change of a line is detected: the header is rejected,
  // a record is reported as damaged (never silently misread). A change in
  // the zero padding after a line changes nothing read.
  uint64_t rseed = strata::testing::TestSeed();
  SCOPED_TRACE("STRATA_SEED=" + std::to_string(rseed));
  std::mt19937_64 rng(rseed);
  size_t header_len = text.find('\n') + 1;
  for (size_t i = 0; i < text.size(); ++i) {
    std::string m = text;
    char v;
    do {
      v = static_cast<char>(rng());
    } while (v == m[i]);
    m[i] = v;
    auto r = ParseJournal(m, "j");
    if (i < header_len) {
      EXPECT_FALSE(r.has_value()) << "header byte " << i;
      if (!r.has_value()) {
        EXPECT_EQ(r.error().code(), StatusCode::kCorruption);
      }
    } else {
      ASSERT_TRUE(r.has_value()) << i;
      if (r->bad_lines.empty()) {
        EXPECT_EQ(r->outstanding, c->outstanding) << "byte " << i;
        EXPECT_EQ(text[i], '\0') << "byte " << i << " changed, nothing reported";
      }
    }
  }
  // Every cut is damage: committed records are never read as absent.
  for (size_t len = 0; len < text.size(); ++len) {
    auto r = ParseJournal(text.substr(0, len), "j");
    EXPECT_TRUE(!r.has_value() || !r->bad_lines.empty()) << "cut to " << len;
  }
  // So is a committed record zeroed whole.
  std::string zeroed = text;
  std::fill(zeroed.end() - 512, zeroed.end(), '\0');
  auto z = ParseJournal(zeroed, "j");
  ASSERT_TRUE(z.has_value());
  EXPECT_FALSE(z->bad_lines.empty());
  auto bad = ParseJournal("", "j");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().message(), "j: byte 0: no complete journal header");
  // Version 1 journals (an older strata's) are still read.
  std::string v1 = V1Line("H strata-quiesce-journal 1 77") + V1Line("F fifreeze 7:3 /a -") +
                   V1Line("F fifreeze 7:4 /b -") + V1Line("T fifreeze 7:3 /a -");
  auto old = ParseJournal(v1, "j1");
  ASSERT_TRUE(old.has_value()) << old.error().ToString();
  EXPECT_EQ(old->version, 1);
  EXPECT_EQ(old->pid, 77);
  ASSERT_EQ(old->outstanding.size(), 1u);
  EXPECT_EQ(old->outstanding[0].mount_point, "/b");
}

// Issue 11 (found by bench/hostile_campaign.py, flip-journal): a freeze
// journal cut short, or whose last line lost its '\n', read as "nothing was
// frozen": `strata thaw --all` exited 0 and removed it while the filesystem
// stayed frozen, and `strata status` skipped a journal it could not read. A
// journal its owner left behind, cut at any length or with any byte changed,
// is kept by recovery and reported (here every entry names a backend
// recovery cannot reach, so an entry that is read fails too).
TEST(QuiesceJournal, EveryCutOrChangedByteOfALeftJournalIsKeptAndReported) {
  TempDir src;
  std::string original;
  {
    FreezeJournal j(src.path());
    ASSERT_TRUE(j.Intend({{"fake", "", 1, 2, "/fake/x"}, {"fake", "", 1, 3, "/fake/y"}}).ok());
    ASSERT_TRUE(j.Thawed({{"fake", "", 1, 3, "/fake/y"}}).ok());
    original = ReadText(j.path());
  }  // its owner is gone; the journal stays (/fake/x is outstanding)
  ASSERT_FALSE(original.empty());
  uint64_t rseed = strata::testing::TestSeed();
  SCOPED_TRACE("STRATA_SEED=" + std::to_string(rseed));
  std::mt19937_64 rng(rseed);
  auto check = [&](const std::string& bytes, const std::string& what) {
    TempDir dir;
    std::string path = dir.path() + "/journal-1-0000000000000001";
    {
      std::ofstream f(path, std::ios::binary);
      f << bytes;
    }
    auto stale = StaleJournalEntries(dir.path());
    ASSERT_TRUE(stale.has_value());
    EXPECT_FALSE(stale->entries.empty() && stale->damaged.empty())
        << what << ": status would show nothing left frozen";
    auto rep = RecoverJournals(dir.path());
    ASSERT_TRUE(rep.has_value());
    EXPECT_FALSE(rep->failed.empty()) << what << ": recovery reported nothing it could not do";
    EXPECT_TRUE(fs::exists(path)) << what << ": recovery removed the journal";
  };
  for (size_t len = 0; len < original.size(); len += 1 + rng() % 7) {
    check(original.substr(0, len), "cut to " + std::to_string(len));
  }
  for (size_t i = 0; i < original.size(); i += 1 + rng() % 5) {
    std::string m = original;
    m[i] = static_cast<char>(m[i] ^ (1 + rng() % 255));
    check(m, "byte " + std::to_string(i) + " changed");
  }
  check(original, "intact");
}

// A journal written before the last reboot names nothing that can still be
// frozen: recovery removes it and status does not show it.
TEST(QuiesceJournal, AJournalOfAnEarlierBootIsRemoved) {
  TempDir dir;
  std::string rec = EncodeJournalRecord('F', {"fifreeze", "", 7, 3, "/nowhere"}, 1);
  std::string path = dir.path() + "/journal-1-0000000000000002";
  {
    std::ofstream f(path, std::ios::binary);
    f << EncodeJournalHeader(1, "00000000-0000-0000-0000-000000000000", 512 + rec.size()) << rec;
  }
  ASSERT_FALSE(CurrentBootId().empty());
  auto stale = StaleJournalEntries(dir.path());
  ASSERT_TRUE(stale.has_value());
  EXPECT_TRUE(stale->entries.empty());
  EXPECT_TRUE(stale->damaged.empty());
  auto rep = RecoverJournals(dir.path());
  ASSERT_TRUE(rep.has_value());
  EXPECT_TRUE(rep->failed.empty());
  ASSERT_EQ(rep->not_frozen.size(), 1u);
  EXPECT_EQ(rep->not_frozen[0], "/nowhere (journaled before a reboot)");
  EXPECT_FALSE(fs::exists(path));
}

// The writer's file is locked while it lives; recovery leaves it alone and
// takes over a journal whose owner is gone (here: a record written by hand).
TEST(QuiesceJournal, RecoveryLeavesLiveJournalsAndReportsUnreachableEntries) {
  TempDir dir;
  {
    FreezeJournal live(dir.path());
    ASSERT_TRUE(live.Intend({{"fake", "", 1, 2, "/fake/x"}}).ok());
    auto rep = RecoverJournals(dir.path());
    ASSERT_TRUE(rep.has_value());
    ASSERT_EQ(rep->live.size(), 1u);
    EXPECT_NE(rep->live[0].find("(pid " + std::to_string(::getpid()) + ")"), std::string::npos);
    EXPECT_TRUE(StaleJournalEntries(dir.path())->entries.empty());
  }
  // The owner went away without a T record: the journal stays, and recovery
  // cannot reach a "fake" backend: it says so and keeps the journal.
  auto stale = StaleJournalEntries(dir.path());
  ASSERT_TRUE(stale.has_value());
  ASSERT_EQ(stale->entries.size(), 1u);
  EXPECT_EQ(stale->entries[0].mount_point, "/fake/x");
  auto rep = RecoverJournals(dir.path());
  ASSERT_TRUE(rep.has_value());
  ASSERT_EQ(rep->failed.size(), 1u);
  EXPECT_NE(rep->failed[0].find("/fake/x: journaled by backend 'fake'"), std::string::npos)
      << rep->failed[0];
  EXPECT_EQ(StaleJournalEntries(dir.path())->entries.size(), 1u);
}

}  // namespace
}  // namespace strata::quiesce
