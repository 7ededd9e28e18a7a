/* point.h: one backup point of a repository, opened for reading from any
 * number of threads: what the nbdkit plugin (`strata serve`) and the FUSE
 * mount (`strata mount`) are built on. Part of the C interface (strata.h
 * states the conventions: return codes, strata_last_error, struct_size).
 *
 * A point is the resolved view of a backup chain: reads go through the
 * chain's archives newest first, every byte checked before it is returned
 * (a frame's compressed XXH3-64 and size, the XXH3-128 of every extent in
 * it; a zero extent's hash on its first read). Ranges that read as zeros
 * are reported by strata_point_map, so clients can skip them.
 *
 * Locking: the repository is opened read-only (its shared lock) only while
 * the point opens: the catalog is read, the chain resolved and its archives
 * opened. Then the lock is released. Archives are never changed in place
 * (a merge writes a new file and renames it over the old one, a removal
 * unlinks it), so the open descriptors keep showing exactly the point that
 * was opened while backups, merges and removals go on; the disk space of an
 * archive removed meanwhile is freed when the point is closed.
 */
#ifndef STRATA_POINT_H_
#define STRATA_POINT_H_

#include <stddef.h>
#include <stdint.h>

#include "strata/strata.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct strata_point strata_point;

typedef struct {
  size_t struct_size;    /* sizeof(strata_point_params) */
  const char* backup;    /* "latest" (NULL), a backup id or a unique prefix */
  const char* disk;      /* NULL: any disk; else only backups of the disk of this name */
  uint64_t cache_bytes;  /* decompressed frames kept for later reads; 0: none (default 64 MiB) */
  uint32_t lock_wait_ms; /* how long to wait for a writer holding the repository (0: fail at once, STRATA_E_BUSY) */
} strata_point_params;
void strata_point_params_init(strata_point_params* p);

/* Opens backup p->backup of repository `repo_dir`. STRATA_E_NOT_FOUND: no
 * such backup (or repository); STRATA_E_CORRUPTION: the chain is broken. */
int strata_point_open(const char* repo_dir, const strata_point_params* p, strata_point** out);
void strata_point_close(strata_point* point);

/* The backup's id (32 hex digits), disk name and size in bytes. Valid until
 * strata_point_close. */
const char* strata_point_id(const strata_point* point);
const char* strata_point_disk_name(const strata_point* point);
uint64_t strata_point_size(const strata_point* point);

/* Reads bytes [offset, offset + length) of the disk into buf. Thread-safe.
 * STRATA_E_CORRUPTION names the archive and range that failed a checksum. */
int strata_point_read(strata_point* point, uint64_t offset, void* buf, size_t length);

/* Calls fn for maximal runs of [offset, offset + length) (clipped to the
 * disk) that hold data (zero = 0) or read as zeros (zero = 1), in order; a
 * non-zero return stops the walk. Thread-safe, reads no archive bytes. */
typedef int (*strata_point_map_fn)(void* opaque, uint64_t offset, uint64_t length, int zero);
int strata_point_map(strata_point* point, uint64_t offset, uint64_t length, strata_point_map_fn fn,
                     void* opaque);

/* Loads the frames holding [offset, offset + length) into the cache (a
 * hint, like NBD_CMD_CACHE). Thread-safe. */
int strata_point_prefetch(strata_point* point, uint64_t offset, uint64_t length);

typedef struct {
  size_t struct_size;           /* sizeof(strata_point_stats) */
  uint64_t cache_hits;          /* frame found in the cache */
  uint64_t cache_waits;         /* frame being loaded by another thread: waited for it */
  uint64_t cache_misses;        /* frame read and decompressed */
  uint64_t cache_evictions;
  uint64_t cache_bytes;         /* decompressed bytes held now */
  uint64_t bytes_decompressed;  /* in total */
} strata_point_stats;
/* Fills *out (set out->struct_size first). Thread-safe. */
int strata_point_get_stats(strata_point* point, strata_point_stats* out);

#ifdef __cplusplus
}
#endif

#endif /* STRATA_POINT_H_ */
