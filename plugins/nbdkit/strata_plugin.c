/* nbdkit-strata-plugin: exports one backup point of a strata repository,
 * read-only, over NBD (docs/design/serve.md).
 *
 *   nbdkit -r nbdkit-strata-plugin.so repo=/backups [backup=ID|latest]
 *          [disk=NAME] [cache=256M] [lock-wait=SECONDS]
 *
 * A client of the C interface only (strata/point.h). Every read goes
 * through the resolved chain with every checksum verified; block status
 * reports the ranges that read as zeros as holes, so qemu-img map, nbdcopy
 * and QEMU skip them. Thread model parallel: the point is thread-safe and
 * its cache of decompressed frames is shared by every connection, so
 * multi-conn is safe (a read-only export is consistent across connections).
 *
 * The repository's shared lock is held only while the point opens (in
 * .get_ready, before nbdkit forks into the background), then released:
 * backups and merges of the repository go on while the point is served,
 * which keeps showing exactly the backup it opened (see point.h). */
#define NBDKIT_API_VERSION 2
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-plugin.h>

#include "strata/point.h"

static char* repo_dir;       /* absolute */
static char* backup;         /* NULL: latest */
static char* disk;           /* NULL: any */
static int64_t cache_bytes = 256 << 20;
static unsigned lock_wait_s; /* seconds to wait for a writer holding the repository */
static strata_point* point;
static char description[256];

static void strata_unload(void) {
  if (point) {
    strata_point_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    if (strata_point_get_stats(point, &s) == STRATA_OK) {
      nbdkit_debug("frame cache: %" PRIu64 " hits, %" PRIu64 " waits, %" PRIu64 " misses, %" PRIu64
                   " evictions, %" PRIu64 " bytes decompressed",
                   s.cache_hits, s.cache_waits, s.cache_misses, s.cache_evictions, s.bytes_decompressed);
    }
  }
  strata_point_close(point);
  point = NULL;
  free(repo_dir);
  free(backup);
  free(disk);
}

static int strata_config(const char* key, const char* value) {
  if (strcmp(key, "repo") == 0) {
    free(repo_dir);
    repo_dir = nbdkit_absolute_path(value);
    return repo_dir ? 0 : -1;
  }
  if (strcmp(key, "backup") == 0) {
    free(backup);
    backup = strdup(value);
    return backup ? 0 : -1;
  }
  if (strcmp(key, "disk") == 0) {
    free(disk);
    disk = strdup(value);
    return disk ? 0 : -1;
  }
  if (strcmp(key, "cache") == 0) {
    cache_bytes = nbdkit_parse_size(value);
    return cache_bytes < 0 ? -1 : 0;
  }
  if (strcmp(key, "lock-wait") == 0) {
    return nbdkit_parse_unsigned("lock-wait", value, &lock_wait_s);
  }
  nbdkit_error("unknown parameter '%s' (expected repo, backup, disk, cache or lock-wait)", key);
  return -1;
}

static int strata_config_complete(void) {
  if (!repo_dir) {
    nbdkit_error("the repo=DIR parameter is required");
    return -1;
  }
  if (lock_wait_s > 86400) {
    nbdkit_error("lock-wait must be at most 86400 seconds");
    return -1;
  }
  return 0;
}

/* Opens the point before nbdkit forks and accepts connections, so a bad
 * repository or backup id fails nbdkit's start with strata's message. */
static int strata_get_ready(void) {
  strata_point_params p;
  strata_point_params_init(&p);
  p.backup = backup;
  p.disk = disk;
  p.cache_bytes = (uint64_t)cache_bytes;
  p.lock_wait_ms = lock_wait_s * 1000u;
  if (strata_point_open(repo_dir, &p, &point) != STRATA_OK) {
    nbdkit_error("%s", strata_last_error());
    return -1;
  }
  snprintf(description, sizeof description, "strata backup %s of %s", strata_point_id(point),
           strata_point_disk_name(point));
  nbdkit_debug("serving %s: %" PRIu64 " bytes, frame cache %" PRId64 " bytes", description,
               strata_point_size(point), cache_bytes);
  return 0;
}

static void* strata_open(int readonly) {
  (void)readonly; /* always read-only: there is no pwrite */
  return NBDKIT_HANDLE_NOT_NEEDED;
}

static const char* strata_export_description(void* handle) {
  (void)handle;
  return description;
}

static int64_t strata_get_size(void* handle) {
  (void)handle;
  return (int64_t)strata_point_size(point);
}

static int strata_can_multi_conn(void* handle) {
  (void)handle;
  return 1;
}

static int strata_can_extents(void* handle) {
  (void)handle;
  return 1;
}

static int strata_can_cache(void* handle) {
  (void)handle;
  return cache_bytes > 0 ? NBDKIT_CACHE_NATIVE : NBDKIT_CACHE_NONE;
}

static int strata_is_rotational(void* handle) {
  (void)handle;
  return 0;
}

static int fail(int rc) {
  nbdkit_error("%s", strata_last_error());
  nbdkit_set_error(rc == STRATA_E_INVALID_ARGUMENT ? EINVAL : rc == STRATA_E_NO_MEMORY ? ENOMEM : EIO);
  return -1;
}

static int strata_pread(void* handle, void* buf, uint32_t count, uint64_t offset, uint32_t flags) {
  (void)handle;
  (void)flags;
  int rc = strata_point_read(point, offset, buf, count);
  return rc == STRATA_OK ? 0 : fail(rc);
}

static int strata_cache(void* handle, uint32_t count, uint64_t offset, uint32_t flags) {
  (void)handle;
  (void)flags;
  int rc = strata_point_prefetch(point, offset, count);
  return rc == STRATA_OK ? 0 : fail(rc);
}

struct extents_walk {
  struct nbdkit_extents* extents;
  int one;    /* NBDKIT_FLAG_REQ_ONE: the first extent is enough */
  int error;  /* nbdkit_add_extent failed (it set the error) */
};

static int add_extent(void* opaque, uint64_t offset, uint64_t length, int zero) {
  struct extents_walk* w = opaque;
  if (nbdkit_add_extent(w->extents, offset, length, zero ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0) == -1) {
    w->error = 1;
    return 1;
  }
  return w->one;
}

static int strata_extents(void* handle, uint32_t count, uint64_t offset, uint32_t flags,
                          struct nbdkit_extents* extents) {
  (void)handle;
  struct extents_walk w = {extents, (flags & NBDKIT_FLAG_REQ_ONE) != 0, 0};
  int rc = strata_point_map(point, offset, count, add_extent, &w);
  if (w.error) return -1;
  if (rc != STRATA_OK && rc != STRATA_E_CANCELLED) return fail(rc);
  return 0;
}

static void strata_dump_plugin(void) { printf("strata_version=%s\n", strata_version()); }

static struct nbdkit_plugin plugin = {
    .name = "strata",
    .longname = "strata backup point",
    .version = "1",
    .description = "Serve one backup point of a strata repository, read-only",
    .unload = strata_unload,
    .config = strata_config,
    .config_complete = strata_config_complete,
    .config_help =
        "repo=DIR          (required) the repository\n"
        "backup=ID|latest  the backup point (default latest)\n"
        "disk=NAME         only backups of this disk\n"
        "cache=SIZE        decompressed frames kept (default 256M; 0: none)\n"
        "lock-wait=SECS    wait for a writer holding the repository (default 0)",
    .magic_config_key = "repo",
    .get_ready = strata_get_ready,
    .open = strata_open,
    .get_size = strata_get_size,
    .export_description = strata_export_description,
    .is_rotational = strata_is_rotational,
    .can_multi_conn = strata_can_multi_conn,
    .can_extents = strata_can_extents,
    .can_cache = strata_can_cache,
    .pread = strata_pread,
    .cache = strata_cache,
    .extents = strata_extents,
    .dump_plugin = strata_dump_plugin,
    .errno_is_preserved = 0,
};

NBDKIT_REGISTER_PLUGIN(plugin)
