/* strata.h: the C interface of libstrata, for backup software in any language.
 *
 * Covers what a backup product needs: images (map, dirty bitmaps, reads),
 * the change tracker, repositories (init, open, back up from any change
 * source, list, restore, verify), with progress callbacks and cancellation.
 *
 * Conventions
 *  - Every function returns 0 (STRATA_OK) or a STRATA_E_* code (the values of
 *    strata::StatusCode); strata_last_error() then returns a one-line
 *    message naming the file and the problem, valid until the next call on
 *    the same thread. No C++ exception crosses this interface: allocation
 *    failure is STRATA_E_NO_MEMORY.
 *  - Handles are created by the _open, _create and _init functions and
 *    released by the matching _close or _free (NULL is accepted there). A handle is used
 *    by one thread at a time, except strata_tracker_mark, which any number
 *    of threads may call at once.
 *  - Structs passed in begin with `struct_size`: fill it with sizeof (the
 *    _init functions do), so fields can be added without breaking callers.
 *  - Strings are UTF-8 or raw bytes, NUL-terminated; sizes are bytes.
 */
#ifndef STRATA_STRATA_H_
#define STRATA_STRATA_H_

#include <stddef.h>
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
#define STRATA_E_UNKNOWN_STATE 8 /* change information lost: full backup or --scan needed */
#define STRATA_E_BUSY 9
#define STRATA_E_CANCELLED 10
#define STRATA_E_NO_MEMORY 11
#define STRATA_E_INTERNAL 12 /* a bug in strata: please report it */

/* "0.2.0": the library's version (the CMake project version). */
const char* strata_version(void);
/* Message of the last error on this thread ("" if none). */
const char* strata_last_error(void);

/* A range of guest bytes. */
typedef int (*strata_extent_fn)(void* opaque, uint64_t offset, uint64_t length);

/* ---- images: raw and qcow2 files and block devices ---- */

typedef struct strata_image strata_image;

/* format: "auto" (or NULL), "raw" or "qcow2". */
int strata_image_open(const char* path, const char* format, strata_image** out);
void strata_image_close(strata_image* image);
uint64_t strata_image_size(const strata_image* image);
/* Reads guest bytes [offset, offset + length) into buf. */
int strata_image_read(strata_image* image, uint64_t offset, void* buf, size_t length);

/* One stretch of the map, as `qemu-img map --output=json` prints it. */
typedef struct {
  uint64_t start, length;
  int depth;    /* 0: this file, 1: its backing file, ... */
  int present;  /* allocated somewhere in the chain */
  int zero;     /* reads as zeros */
  int data;     /* reading needs the file */
} strata_map_entry;
/* Calls fn for every map entry in order; a non-zero return stops the walk
 * (the function then returns STRATA_E_CANCELLED). */
int strata_image_map(strata_image* image, int (*fn)(void* opaque, const strata_map_entry* entry),
                     void* opaque);
/* The dirty ranges of qcow2 persistent bitmap `name` (maximal runs,
 * ascending). An inconsistent (in_use) bitmap is STRATA_E_UNKNOWN_STATE. */
int strata_image_bitmap_extents(strata_image* image, const char* name, strata_extent_fn fn, void* opaque);

/* ---- the change tracker (see tracker.h for the consistency contract) ---- */

typedef struct strata_tracker strata_tracker;
typedef struct strata_extent_iter strata_extent_iter;

/* Creates a tracker state directory for a disk of `disk_size` bytes at
 * `granularity` bytes per block (0: 64 KiB), intent log enabled. */
int strata_tracker_create(const char* dir, uint64_t disk_size, uint64_t granularity, strata_tracker** out);
/* Opens an existing state directory read-write (recovering after a crash). */
int strata_tracker_open(const char* dir, strata_tracker** out);
/* Marks bytes [offset, offset + length) as written. Thread-safe; call it
 * before acknowledging the write. */
int strata_tracker_mark(strata_tracker* t, uint64_t offset, uint64_t length);
/* Seals the active generation as checkpoint `name`; *id_out (may be NULL)
 * receives its id. */
int strata_tracker_checkpoint(strata_tracker* t, const char* name, uint64_t* id_out);
/* Iterators over changed byte runs (ascending, maximal, clipped to the
 * disk). "since" includes the active generation. */
int strata_tracker_changed_since(strata_tracker* t, const char* name, strata_extent_iter** out);
int strata_tracker_changed_between(strata_tracker* t, const char* from, const char* to, strata_extent_iter** out);
/* 1 and the next run, or 0 at the end. */
int strata_extent_iter_next(strata_extent_iter* it, uint64_t* offset, uint64_t* length);
/* Total bytes covered by the iterator's set. */
uint64_t strata_extent_iter_bytes(const strata_extent_iter* it);
void strata_extent_iter_free(strata_extent_iter* it);
/* Removes a checkpoint, merging its generation into the next. */
int strata_tracker_remove(strata_tracker* t, const char* name);
uint64_t strata_tracker_disk_size(const strata_tracker* t);
/* Closes cleanly and frees `t` (also on error). */
int strata_tracker_close(strata_tracker* t);

/* ---- repositories ---- */

typedef struct strata_repo strata_repo;

/* Creates an empty repository in directory `dir`. */
int strata_repo_init(const char* dir);
/* Opens a repository: read_only = 1 shares it with other readers (list,
 * restore, verify); 0 holds it alone (backups). lock_wait_ms: how long to
 * wait for another process (0: STRATA_E_BUSY at once). */
int strata_repo_open(const char* dir, int read_only, uint32_t lock_wait_ms, strata_repo** out);
void strata_repo_close(strata_repo* repo);

/* Progress: bytes done and planned; a non-zero return cancels the operation
 * (it then returns STRATA_E_CANCELLED and leaves nothing half-written). */
typedef int (*strata_progress_fn)(void* opaque, uint64_t done, uint64_t total);

typedef enum {
  STRATA_SOURCE_FULL = 0,     /* allocated extents */
  STRATA_SOURCE_SCAN = 4,     /* read everything, store what differs from the parent */
  STRATA_SOURCE_TRACKER = 3,  /* one step: a new checkpoint of tracker_dir, changes since the parent's */
  STRATA_SOURCE_BITMAP = 1,   /* offline qcow2: the bitmap strata added at the parent backup */
  STRATA_SOURCE_SNAPSHOT = 2, /* qcow2 internal snapshot diff since `since_snapshot` */
  STRATA_SOURCE_REFLINK = 6   /* FIEMAP diff of reflink clones */
} strata_source;

typedef struct {
  size_t struct_size;      /* sizeof(strata_backup_params) */
  const char* image;       /* required */
  const char* format;      /* "auto" (NULL), "raw", "qcow2" */
  const char* disk_name;   /* NULL: the image's absolute path */
  strata_source source;
  /* End point recorders and source parameters (NULL / 0: unused). */
  const char* tracker_dir; /* STRATA_SOURCE_TRACKER, or the end point of FULL/SCAN */
  const char* since;       /* tracker: start checkpoint (checked against the parent) */
  const char* bitmap;      /* qcow2 bitmap series (BITMAP, or the end point of FULL/SCAN) */
  const char* snapshot;    /* read this qcow2 internal snapshot */
  const char* since_snapshot;
  int reflink;             /* reflink recorder (REFLINK, or the end point of FULL/SCAN) */
  const char* parent;      /* NULL: the newest backup of the disk that fits */
  uint64_t granularity;    /* FULL only; 0: 64 KiB */
  int level;               /* zstd level; 0: 1 */
  strata_progress_fn progress;
  void* progress_opaque;
} strata_backup_params;
void strata_backup_params_init(strata_backup_params* p);

typedef struct {
  size_t struct_size;      /* sizeof(strata_backup_result) */
  char id[33];             /* the new backup's id (32 hex digits) */
  char parent[33];         /* "" for a full backup */
  uint64_t changed_bytes;  /* guest bytes the change source named */
  uint64_t data_bytes;     /* guest bytes stored as data */
  uint64_t stored_bytes;   /* compressed payload */
  uint64_t archive_bytes;  /* archive file size */
  double seconds;
} strata_backup_result;

/* Backs up an image; the repository must be open for writing. */
int strata_backup(strata_repo* repo, const strata_backup_params* params, strata_backup_result* result);

/* One backup of the catalog, oldest first. Strings are valid during the
 * callback only. */
typedef struct {
  size_t struct_size;
  const char* id;
  const char* parent;      /* "" for a full backup */
  const char* disk_name;
  const char* source;      /* "full", "scan", "tracker", "bitmap", "snapshot", "reflink" */
  const char* end_point;   /* human description of where the content ends */
  uint64_t created_unix_ns, content_unix_ns;
  uint64_t disk_size, logical_bytes, stored_bytes, archive_bytes;
  int merged, quiesced;
} strata_backup_info;
int strata_list(strata_repo* repo, int (*fn)(void* opaque, const strata_backup_info* info), void* opaque);

/* Restores backup `which` ("latest", an id or a unique prefix) to `output`,
 * a raw file (created 0600, or overwritten) or a block device. */
int strata_restore(strata_repo* repo, const char* which, const char* output, strata_progress_fn progress,
                   void* opaque);
/* Checks every checksum of the chain of `which` (NULL: every backup). */
int strata_verify(strata_repo* repo, const char* which, strata_progress_fn progress, void* opaque);

#ifdef __cplusplus
}
#endif

#endif /* STRATA_STRATA_H_ */
