#include "engine/tracker/reader_slots.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <mutex>
#include <thread>

namespace strata::tracker_internal {

namespace {

std::atomic<ReaderSlot*> g_head{nullptr};
std::mutex g_registry_mu;

int Membarrier(int cmd) { return static_cast<int>(::syscall(__NR_membarrier, cmd, 0, 0)); }

bool InitMembarrier() {
  int cmds = Membarrier(MEMBARRIER_CMD_QUERY);
  if (cmds < 0 || !(cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) ||
      !(cmds & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)) {
    return false;
  }
  return Membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
}

// Returns the slot to the pool when its thread exits.
struct SlotOwner {
  ReaderSlot* slot = nullptr;
  ~SlotOwner() {
    detail::this_thread_slot = nullptr;
    if (slot != nullptr) {
      slot->word.store(0, std::memory_order_release);
      slot->in_use.store(false, std::memory_order_release);
    }
  }
};

ReaderSlot* AcquireSlot() {
  std::lock_guard<std::mutex> lock(g_registry_mu);
  static const bool memb = [] {
    bool m = InitMembarrier();
    detail::use_membarrier.store(m, std::memory_order_relaxed);
    return m;
  }();
  (void)memb;
  for (ReaderSlot* s = g_head.load(std::memory_order_acquire); s; s = s->next) {
    if (!s->in_use.load(std::memory_order_acquire)) {
      s->in_use.store(true, std::memory_order_relaxed);
      return s;
    }
  }
  // Slots are never freed: WaitForReaders may be walking the list.
  auto* s = new ReaderSlot();
  s->in_use.store(true, std::memory_order_relaxed);
  s->next = g_head.load(std::memory_order_relaxed);
  g_head.store(s, std::memory_order_release);
  return s;
}

}  // namespace

namespace detail {
std::atomic<bool> use_membarrier{false};

ReaderSlot* RegisterThisThread() {
  thread_local SlotOwner owner;
  if (owner.slot == nullptr) owner.slot = AcquireSlot();
  this_thread_slot = owner.slot;
  return owner.slot;
}
}  // namespace detail

void WaitForReaders(const void* old) {
  const uintptr_t w = reinterpret_cast<uintptr_t>(old);
  bool memb;
  {
    // Readers only exist once a slot was handed out, which fixed the mode.
    std::lock_guard<std::mutex> lock(g_registry_mu);
    if (g_head.load(std::memory_order_relaxed) == nullptr) return;
    memb = detail::use_membarrier.load(std::memory_order_relaxed);
  }
  if (memb) {
    // Every running thread of the process passes a full memory barrier:
    // a reader either announced `old` visibly before it, or re-reads the
    // pointer after it and sees the new value.
    Membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
  }
  // Without membarrier, readers announce with a seq_cst exchange; seq_cst
  // loads here put both sides in one total order with the pointer store.
  const std::memory_order order = memb ? std::memory_order_acquire : std::memory_order_seq_cst;
  for (ReaderSlot* s = g_head.load(std::memory_order_acquire); s; s = s->next) {
    int spins = 0;
    while (s->word.load(order) == w) {
      if (++spins < 64) {
        std::this_thread::yield();
      } else {
        // A mark may be waiting for an intent-log fsync.
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }
}

}  // namespace strata::tracker_internal
