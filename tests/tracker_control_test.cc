// The tracker control socket in one process (label unit, also under TSan):
// a TrackerControlServer on a real unix socket, TrackerHandles that reach it
// as another process would, against the owner's own Tracker as the model.
// The nbdkit filter's tests (filter_test.cc) run the same path across
// processes.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "strata/tracker.h"
#include "strata/tracker_control.h"
#include "tests/test_util.h"

namespace strata {
namespace {

constexpr uint64_t kDisk = 256ull << 20;

std::unique_ptr<Tracker> NewTracker(const std::string& dir) {
  TrackerOptions o;
  o.disk_size = kDisk;
  auto t = Tracker::Create(dir, o);
  EXPECT_TRUE(t) << t.error().ToString();
  return t ? std::move(*t) : nullptr;
}

bool SameSet(const ExtentSet& a, const ExtentSet& b) { return a == b; }

TEST(TrackerControl, ThroughTheOwnerAnswersAsTheTracker) {
  testing::TempDir tmp;
  std::string dir = tmp.File("trk");
  auto t = NewTracker(dir);
  ASSERT_TRUE(t);
  auto srv = TrackerControlServer::Start(t.get());
  ASSERT_TRUE(srv) << srv.error().ToString();
  auto h = TrackerHandle::Open(dir);
  ASSERT_TRUE(h) << h.error().ToString();
  EXPECT_TRUE((*h)->via_owner());
  EXPECT_EQ((*h)->owner_pid(), ::getpid());
  EXPECT_EQ((*h)->uuid(), t->uuid());
  EXPECT_EQ((*h)->disk_size(), kDisk);
  EXPECT_EQ((*h)->granularity().bytes(), t->granularity().bytes());

  ASSERT_TRUE(t->Mark(0, 4096).ok());
  auto a = (*h)->Checkpoint("a");
  ASSERT_TRUE(a) << a.error().ToString();
  ASSERT_TRUE(t->Mark(1 << 20, 8192).ok());
  ASSERT_TRUE((*h)->Mark(100 << 20, 1).ok());  // marks through the owner too
  auto b = (*h)->Checkpoint("b");
  ASSERT_TRUE(b);
  ASSERT_TRUE(t->Mark(200 << 20, 65536).ok());
  auto since_remote = (*h)->ChangedSince("a");
  auto since_local = t->ChangedSince("a");
  ASSERT_TRUE(since_remote && since_local);
  EXPECT_TRUE(SameSet(*since_remote, *since_local));
  EXPECT_EQ(since_remote->ByteCount(), 3 * 65536u);
  auto between = (*h)->ChangedBetween("a", "b");
  ASSERT_TRUE(between);
  EXPECT_EQ(between->ByteCount(), 2 * 65536u);
  auto list = (*h)->List();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[1].name, "b");
  EXPECT_EQ((*list)[1].id, b->id);

  // Errors keep their code and message.
  auto dup = (*h)->Checkpoint("a");
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code(), StatusCode::kAlreadyExists);
  auto missing = (*h)->ChangedSince("nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), StatusCode::kNotFound);
  EXPECT_EQ((*h)->Mark(kDisk, 1).code(), StatusCode::kInvalidArgument);

  ASSERT_TRUE((*h)->SetQuiesced("b", true).ok());
  EXPECT_TRUE(t->List()[1].quiesced);
  ASSERT_TRUE((*h)->Remove("a").ok());
  EXPECT_EQ(t->List().size(), 1u);

  // A read-only handle refuses what would change the tracker.
  HandleOptions ro;
  ro.read_only = true;
  auto r = TrackerHandle::Open(dir, ro);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)->Checkpoint("c").error().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE((*r)->ChangedSince("b"));

  ASSERT_TRUE((*h)->Close().ok());
  EXPECT_GE((*srv)->requests(), 10u);
  (*srv)->Stop();
  EXPECT_NE(::access(TrackerControlSocketPath(dir).c_str(), F_OK), 0) << "Stop removes the socket";
  ASSERT_TRUE(t->Close().ok());
}

TEST(TrackerControl, WithoutAnOwnerOpensTheDirectory) {
  testing::TempDir tmp;
  std::string dir = tmp.File("trk");
  {
    auto t = NewTracker(dir);
    ASSERT_TRUE(t && t->Mark(0, 1).ok());
    ASSERT_TRUE(t->Checkpoint("a").has_value());
    ASSERT_TRUE(t->Close().ok());
  }
  // A stale socket file (an owner killed by SIGKILL leaves one): nobody
  // listens, so the handle opens the directory itself.
  {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    std::string p = TrackerControlSocketPath(dir);
    std::strcpy(addr.sun_path, p.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);
  }
  auto h = TrackerHandle::Open(dir);
  ASSERT_TRUE(h) << h.error().ToString();
  EXPECT_FALSE((*h)->via_owner());
  EXPECT_TRUE((*h)->Checkpoint("b"));
  // The directory is now held by this handle: a tracker opened directly
  // meets the lock, and another handle finds no owner to ask.
  auto again = Tracker::Open(dir);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), StatusCode::kBusy);
  HandleOptions quick;
  quick.owner_wait = std::chrono::milliseconds(100);
  auto other = TrackerHandle::Open(dir, quick);
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code(), StatusCode::kBusy);
  EXPECT_NE(other.error().message().find("no owner answers"), std::string::npos) << other.error().message();
  ASSERT_TRUE((*h)->Close().ok());
  // An owner that starts serving while a client waits is found.
  auto t = Tracker::Open(dir);
  ASSERT_TRUE(t);
  std::unique_ptr<TrackerControlServer> late;
  std::thread starter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto s = TrackerControlServer::Start(t->get());
    if (s) late = std::move(*s);
  });
  auto waited = TrackerHandle::Open(dir);
  starter.join();
  ASSERT_TRUE(waited) << waited.error().ToString();
  EXPECT_TRUE((*waited)->via_owner());
  ASSERT_TRUE(late);
  (*waited).reset();
  late->Stop();
  ASSERT_TRUE((*t)->Close().ok());
}

// A state directory whose socket path does not fit a socket address: no
// owner can serve it, so handles open it directly (as before sockets) and
// a server says why it cannot start.
TEST(TrackerControl, LongPathOpensDirectly) {
  testing::TempDir tmp;
  std::string dir = tmp.File(std::string(120, 'd'));
  auto t = NewTracker(dir);
  ASSERT_TRUE(t);
  auto srv = TrackerControlServer::Start(t.get());
  ASSERT_FALSE(srv);
  EXPECT_NE(srv.error().message().find("longer than"), std::string::npos) << srv.error().message();
  ASSERT_TRUE(t->Close().ok());
  auto h = TrackerHandle::Open(dir);
  ASSERT_TRUE(h) << h.error().ToString();
  EXPECT_FALSE((*h)->via_owner());
  ASSERT_TRUE((*h)->Close().ok());
}

// Writers mark from several threads while another thread checkpoints
// through the socket; the guard holds the writers off as the nbdkit filter
// does. Every mark lands in some generation: the union over all
// generations equals what was marked, and each mark that finished before a
// checkpoint began is at or before it.
TEST(TrackerControl, ConcurrentMarksAndRemoteCheckpoints) {
  testing::TempDir tmp;
  std::string dir = tmp.File("trk");
  auto t = NewTracker(dir);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->Checkpoint("start").has_value());
  std::mutex guard_mu;
  std::atomic<int> in_guard{0};
  ControlServerOptions so;
  so.checkpoint_guard = [&](const std::function<Status()>& take) {
    std::lock_guard<std::mutex> l(guard_mu);
    in_guard.fetch_add(1);
    Status s = take();
    in_guard.fetch_sub(1);
    return s;
  };
  auto srv = TrackerControlServer::Start(t.get(), so);
  ASSERT_TRUE(srv);
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  constexpr int kThreads = 3, kMarks = 3000;
  std::vector<std::vector<uint64_t>> marked(kThreads);
  std::atomic<bool> go{true};
  std::vector<std::thread> writers;
  for (int w = 0; w < kThreads; ++w) {
    writers.emplace_back([&, w] {
      std::mt19937_64 rng(seed + static_cast<uint64_t>(w));
      for (int i = 0; i < kMarks && go; ++i) {
        uint64_t off = (rng() % (kDisk / 4096)) * 4096;
        std::lock_guard<std::mutex> l(guard_mu);  // the filter's shared side, simplified
        if (!t->Mark(off, 4096).ok()) return;
        marked[w].push_back(off);
      }
    });
  }
  auto h = TrackerHandle::Open(dir);
  ASSERT_TRUE(h);
  int n = 0;
  for (; n < 20; ++n) {
    ASSERT_TRUE((*h)->Checkpoint("c" + std::to_string(n))) << n;
  }
  for (auto& th : writers) th.join();
  auto all = (*h)->ChangedSince("start");
  ASSERT_TRUE(all);
  auto model = ExtentSet::Create(kDisk, t->granularity());
  ASSERT_TRUE(model);
  for (const auto& v : marked) {
    for (uint64_t off : v) ASSERT_TRUE(model->Add(off, 4096).ok());
  }
  EXPECT_TRUE(SameSet(*all, *model));
  EXPECT_EQ(in_guard.load(), 0);
  ASSERT_TRUE((*h)->Close().ok());
  (*srv)->Stop();
  ASSERT_TRUE(t->Close().ok());
}

}  // namespace
}  // namespace strata
