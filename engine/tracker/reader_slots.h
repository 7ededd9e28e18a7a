// Per-thread reader announcements for the Mark hot path (internal): an
// RCU-like scheme where a Mark announces the epoch object it uses in its
// thread's own cache line, and a checkpoint, after swapping the epoch
// pointer, waits until no thread announces the old one.
//
// With Linux membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) the reader side
// is a plain store and a compiler barrier (the writer's membarrier call
// supplies the full fence on every running thread, as in liburcu's "memb"
// flavour); without it (old kernels, seccomp) the announcement is a seq_cst
// exchange. docs/design/tracker.md §"The hot path".
#ifndef STRATA_ENGINE_TRACKER_READER_SLOTS_H_
#define STRATA_ENGINE_TRACKER_READER_SLOTS_H_

#include <atomic>
#include <cstdint>

namespace strata::tracker_internal {

struct alignas(64) ReaderSlot {
  std::atomic<uintptr_t> word{0};  // announced object, 0 when idle
  std::atomic<bool> in_use{false};
  ReaderSlot* next = nullptr;      // registry list; immutable once published
};

namespace detail {
// Set once, under the registry mutex, before the first slot is handed out;
// every reader reads it after taking its slot. Relaxed loads (a plain mov).
extern std::atomic<bool> use_membarrier;
inline thread_local ReaderSlot* this_thread_slot = nullptr;
ReaderSlot* RegisterThisThread();
}  // namespace detail

// The calling thread's slot (allocated and registered on first use, reused
// after the thread exits).
inline ReaderSlot* ThisThreadSlot() {
  ReaderSlot* s = detail::this_thread_slot;
  return s != nullptr ? s : detail::RegisterThisThread();
}
// Whether the process uses membarrier (valid once a slot was taken).
inline bool ReadersUseMembarrier() {
  return detail::use_membarrier.load(std::memory_order_relaxed);
}

// Announces the current value of `ptr` in `slot` and returns it; the object
// stays valid until ExitRead. Reads must not nest on one thread.
template <typename T>
inline T* EnterRead(ReaderSlot* slot, const std::atomic<T*>& ptr) {
  const bool memb = ReadersUseMembarrier();
  for (;;) {
    T* p = ptr.load(std::memory_order_acquire);
    if (memb) {
      slot->word.store(reinterpret_cast<uintptr_t>(p), std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);
      if (ptr.load(std::memory_order_acquire) == p) return p;
    } else {
      slot->word.exchange(reinterpret_cast<uintptr_t>(p), std::memory_order_seq_cst);
      if (ptr.load(std::memory_order_seq_cst) == p) return p;
    }
  }
}
// Release: everything the reader did happens-before the writer that sees
// the slot change (WaitForReaders' acquire load).
inline void ExitRead(ReaderSlot* slot) { slot->word.store(0, std::memory_order_release); }

// Call after storing a new value (seq_cst) into the pointer readers use:
// returns once no thread announces `old`. May sleep; not for the hot path.
void WaitForReaders(const void* old);

}  // namespace strata::tracker_internal

#endif  // STRATA_ENGINE_TRACKER_READER_SLOTS_H_
