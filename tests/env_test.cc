// Env (include/strata/env.h): the POSIX Env's permissions and locks, and FaultEnv's
// model of what survives a power cut, which the power-cut tests rely on.
#include "strata/env.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>

#include "tests/test_util.h"

namespace strata {
namespace {

std::vector<uint8_t> B(const std::string& s) { return {s.begin(), s.end()}; }

Status WriteNew(Env& env, const std::string& path, const std::string& text, bool sync) {
  STRATA_ASSIGN_OR_RETURN(auto f, env.Open(path, OpenMode::kCreateExclusive));
  STRATA_RETURN_IF_ERROR(f->Write(0, B(text)));
  return sync ? f->Sync() : Status::Ok();
}

TEST(FaultEnvTest, OnlyDurableStateSurvivesAPowerCut) {
  FaultEnv env;
  ASSERT_TRUE(env.MakeDir("/r").ok());
  ASSERT_TRUE(env.SyncDir("/").ok());
  ASSERT_TRUE(WriteNew(env, "/r/synced", "abc", true).ok());
  ASSERT_TRUE(WriteNew(env, "/r/unsynced", "xyz", false).ok());
  ASSERT_TRUE(env.SyncDir("/r").ok());
  ASSERT_TRUE(WriteNew(env, "/r/late", "late", true).ok());  // name not durable
  {
    auto f = env.Open("/r/synced", OpenMode::kReadWrite);
    ASSERT_TRUE(f.has_value());
    ASSERT_TRUE((*f)->Write(3, B("def")).ok());  // bytes not durable
  }
  env.PowerCut();
  EXPECT_EQ(*env.Contents("/r/synced"), B("abc"));
  EXPECT_TRUE(env.Contents("/r/unsynced")->empty());
  EXPECT_FALSE(env.Exists("/r/late"));
}

TEST(FaultEnvTest, CutModesKeepNamesOrBytes) {
  for (auto mode : {FaultEnv::CutMode::kKeepNames, FaultEnv::CutMode::kKeepBytes}) {
    FaultEnv env;
    ASSERT_TRUE(env.MakeDir("/r").ok());
    ASSERT_TRUE(env.SyncDir("/").ok());
    ASSERT_TRUE(WriteNew(env, "/r/a", "old", true).ok());
    ASSERT_TRUE(env.SyncDir("/r").ok());
    ASSERT_TRUE(WriteNew(env, "/r/tmp", "new", false).ok());
    ASSERT_TRUE(env.Rename("/r/tmp", "/r/a").ok());  // neither bytes nor name durable
    env.PowerCut(mode);
    if (mode == FaultEnv::CutMode::kKeepNames) {
      EXPECT_TRUE(env.Contents("/r/a")->empty());  // the rename reached the disk, the bytes did not
    } else {
      EXPECT_EQ(*env.Contents("/r/a"), B("old"));
    }
  }
}

TEST(FaultEnvTest, WriteFileAtomicIsOldOrNewAtEveryCutPoint) {
  FaultEnv probe;
  ASSERT_TRUE(probe.MakeDir("/r").ok());
  ASSERT_TRUE(probe.SyncDir("/").ok());
  ASSERT_TRUE(probe.WriteFileAtomic("/r/f", B("old")).ok());
  uint64_t before = probe.MutatingCalls();
  ASSERT_TRUE(probe.WriteFileAtomic("/r/f", B("new!")).ok());
  const uint64_t calls = probe.MutatingCalls() - before;
  ASSERT_GE(calls, 4u);
  for (uint64_t cut = 1; cut <= calls + 1; ++cut) {
    for (auto mode : {FaultEnv::CutMode::kStrict, FaultEnv::CutMode::kKeepNames, FaultEnv::CutMode::kKeepBytes}) {
      FaultEnv env;
      ASSERT_TRUE(env.MakeDir("/r").ok());
      ASSERT_TRUE(env.SyncDir("/").ok());
      ASSERT_TRUE(env.WriteFileAtomic("/r/f", B("old")).ok());
      env.CutAfter(cut);
      Status s = env.WriteFileAtomic("/r/f", B("new!"));
      env.PowerCut(mode);
      auto got = env.Contents("/r/f");
      ASSERT_TRUE(got.has_value()) << "cut " << cut;
      EXPECT_TRUE(*got == B("old") || *got == B("new!")) << "cut " << cut;
      if (s.ok()) {
        EXPECT_EQ(*got, B("new!")) << "acknowledged but lost, cut " << cut;
      }
    }
  }
}

TEST(FaultEnvTest, CutPointFailsEveryLaterCall) {
  FaultEnv env;
  ASSERT_TRUE(env.MakeDir("/r").ok());
  env.CutAfter(3);
  ASSERT_TRUE(WriteNew(env, "/r/a", "x", false).ok());  // create and write: calls 1 and 2
  EXPECT_FALSE(env.SyncDir("/r").ok());                  // call 3: the power goes
  EXPECT_FALSE(env.Open("/r/a", OpenMode::kReadOnly).has_value());
  EXPECT_TRUE(env.cut());
  env.PowerCut();
  EXPECT_FALSE(env.cut());
  EXPECT_FALSE(env.Exists("/r"));  // /r itself was never made durable
}

TEST(FaultEnvTest, LocksConflictAndDieWithTheProcess) {
  FaultEnv env;
  auto ex = env.Lock("/lock", LockMode::kExclusive, std::chrono::milliseconds(0));
  ASSERT_TRUE(ex.has_value());
  EXPECT_EQ(env.Lock("/lock", LockMode::kShared, std::chrono::milliseconds(20)).error().code(), StatusCode::kBusy);
  ex->reset();
  auto s1 = env.Lock("/lock", LockMode::kShared, std::chrono::milliseconds(0));
  auto s2 = env.Lock("/lock", LockMode::kShared, std::chrono::milliseconds(0));
  ASSERT_TRUE(s1.has_value() && s2.has_value());
  EXPECT_FALSE(env.Lock("/lock", LockMode::kExclusive, std::chrono::milliseconds(0)).has_value());
  env.PowerCut();
  EXPECT_TRUE(env.Lock("/lock", LockMode::kExclusive, std::chrono::milliseconds(0)).has_value());
}

TEST(PosixEnvTest, PrivateFilesAndOfdLocks) {
  testing::TempDir dir;
  Env* env = Env::Default();
  std::string d = dir.File("repo");
  ASSERT_TRUE(env->MakeDir(d).ok());
  ASSERT_TRUE(env->WriteFileAtomic(d + "/f", B("hello")).ok());
  struct stat st;
  ASSERT_EQ(::stat(d.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((d + "/f").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto names = env->ListDir(d);
  ASSERT_TRUE(names.has_value());
  EXPECT_EQ(*names, std::vector<std::string>{"f"});  // no temporary left
  // OFD locks conflict between two open file descriptions of one process.
  auto ex = env->Lock(d + "/lock", LockMode::kExclusive, std::chrono::milliseconds(0));
  ASSERT_TRUE(ex.has_value());
  auto t0 = std::chrono::steady_clock::now();
  auto busy = env->Lock(d + "/lock", LockMode::kShared, std::chrono::milliseconds(100));
  EXPECT_EQ(busy.error().code(), StatusCode::kBusy);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(100));
  ex->reset();
  auto sh1 = env->Lock(d + "/lock", LockMode::kShared, std::chrono::milliseconds(0));
  auto sh2 = env->Lock(d + "/lock", LockMode::kShared, std::chrono::milliseconds(0));
  EXPECT_TRUE(sh1.has_value() && sh2.has_value());
}

}  // namespace
}  // namespace strata
