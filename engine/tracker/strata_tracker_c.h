/* strata_tracker_c.h: a plain C interface over the strata change tracker
 * (engine/tracker/tracker.h), so other languages can link the library.
 *
 * Every function returns 0 (STRATA_OK) on success or a strata status code
 * (STRATA_E_*, the values of strata::StatusCode); strata_last_error()
 * then returns the message of the last failure on the calling thread.
 * Handles are not thread-safe except strata_tracker_mark, which may be
 * called from many threads at once (the consistency contract of tracker.h
 * applies). Ownership: *_open/_create return handles the caller releases
 * with strata_tracker_close / strata_extent_iter_free.
 */
#ifndef STRATA_ENGINE_TRACKER_STRATA_TRACKER_C_H_
#define STRATA_ENGINE_TRACKER_STRATA_TRACKER_C_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STRATA_OK 0
#define STRATA_E_INVALID_ARGUMENT 1
#define STRATA_E_NOT_FOUND 2
#define STRATA_E_CORRUPTION 3
#define STRATA_E_IO 4
#define STRATA_E_UNSUPPORTED 5
#define STRATA_E_NO_SPACE 6
#define STRATA_E_ALREADY_EXISTS 7
#define STRATA_E_UNKNOWN_STATE 8 /* change information lost: full backup needed */
#define STRATA_E_BUSY 9

typedef struct strata_tracker strata_tracker;
typedef struct strata_extent_iter strata_extent_iter;

/* Creates a tracker state directory for a disk of `disk_size` bytes at
 * `granularity` bytes per block (0: 64 KiB), intent log enabled. */
int strata_tracker_create(const char* dir, uint64_t disk_size, uint64_t granularity,
                          strata_tracker** out);
/* Opens an existing state directory read-write (recovering after a crash). */
int strata_tracker_open(const char* dir, strata_tracker** out);
/* Marks bytes [offset, offset + length) as written. Thread-safe. */
int strata_tracker_mark(strata_tracker* t, uint64_t offset, uint64_t length);
/* Seals the active generation as checkpoint `name`; *id_out (may be NULL)
 * receives its id. */
int strata_tracker_checkpoint(strata_tracker* t, const char* name, uint64_t* id_out);
/* Iterators over changed byte runs (ascending, maximal, clipped to the
 * disk). "since" includes the active generation. */
int strata_tracker_changed_since(strata_tracker* t, const char* name, strata_extent_iter** out);
int strata_tracker_changed_between(strata_tracker* t, const char* from, const char* to,
                                   strata_extent_iter** out);
/* 1 and the next run, or 0 at the end. */
int strata_extent_iter_next(strata_extent_iter* it, uint64_t* offset, uint64_t* length);
/* Total bytes covered by the iterator's set. */
uint64_t strata_extent_iter_bytes(const strata_extent_iter* it);
void strata_extent_iter_free(strata_extent_iter* it);
/* Removes a checkpoint, merging its generation into the next. */
int strata_tracker_remove(strata_tracker* t, const char* name);
uint64_t strata_tracker_disk_size(const strata_tracker* t);
/* Closes cleanly and frees `t` (also on error). NULL is a no-op. */
int strata_tracker_close(strata_tracker* t);
/* Message of the last error on this thread ("" if none). Valid until the
 * next call on this thread. */
const char* strata_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* STRATA_ENGINE_TRACKER_STRATA_TRACKER_C_H_ */
