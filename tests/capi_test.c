/* The C API (include/strata/strata.h) from a C program, as a third party
 * uses it: an image's map, a repository, a full and an incremental backup, the
 * listing, a restore compared byte for byte, verify, a cancelled backup that
 * leaves nothing behind, and error codes with messages.
 * Usage: capi_test WORKDIR (an empty directory it may fill). */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <strata/strata.h>

static int failures = 0;
#define CHECK(cond)                                                                                   \
  do {                                                                                                \
    if (!(cond)) {                                                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond,       \
              strata_last_error());                                                                   \
      ++failures;                                                                                     \
    }                                                                                                 \
  } while (0)

enum { kDisk = 8 << 20 };

static void write_at(const char* path, uint64_t off, int byte, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT, 0644);
  char* buf = malloc(len);
  memset(buf, byte, len);
  if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len) ++failures;
  free(buf);
  close(fd);
}

static int same_files(const char* a, const char* b) {
  FILE* fa = fopen(a, "rb");
  FILE* fb = fopen(b, "rb");
  int same = fa && fb;
  while (same) {
    int ca = fgetc(fa), cb = fgetc(fb);
    if (ca != cb) same = 0;
    if (ca == EOF || cb == EOF) break;
  }
  if (fa) fclose(fa);
  if (fb) fclose(fb);
  return same;
}

static int count_data(void* opaque, const strata_map_entry* e) {
  if (e->data) *(uint64_t*)opaque += e->length;
  return 0;
}

struct listing {
  int n;
  char last_id[33];
};
static int on_backup(void* opaque, const strata_backup_info* info) {
  struct listing* l = opaque;
  ++l->n;
  snprintf(l->last_id, sizeof l->last_id, "%s", info->id);
  return 0;
}

static int cancel_at_once(void* opaque, uint64_t done, uint64_t total) {
  (void)opaque;
  (void)done;
  (void)total;
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: capi_test WORKDIR\n");
    return 2;
  }
  char disk[4096], repo[4096], out[4096];
  snprintf(disk, sizeof disk, "%s/disk.raw", argv[1]);
  snprintf(repo, sizeof repo, "%s/repo", argv[1]);
  snprintf(out, sizeof out, "%s/out.raw", argv[1]);
  CHECK(strlen(strata_version()) > 0);

  /* A sparse disk with two data runs. */
  int fd = open(disk, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  CHECK(fd >= 0 && ftruncate(fd, kDisk) == 0);
  close(fd);
  write_at(disk, 0, 'a', 1 << 20);
  write_at(disk, 5 << 20, 'b', 512 << 10);

  strata_image* img = NULL;
  CHECK(strata_image_open(disk, "raw", &img) == STRATA_OK);
  CHECK(strata_image_size(img) == kDisk);
  uint64_t data = 0;
  CHECK(strata_image_map(img, count_data, &data) == STRATA_OK);
  CHECK(data == (1 << 20) + (512 << 10));
  char head[4];
  CHECK(strata_image_read(img, 0, head, sizeof head) == STRATA_OK && head[0] == 'a');
  strata_image_close(img);
  CHECK(strata_image_open("/nonexistent/disk", NULL, &img) == STRATA_E_NOT_FOUND);
  CHECK(strstr(strata_last_error(), "/nonexistent/disk") != NULL);

  CHECK(strata_repo_init(repo) == STRATA_OK);
  CHECK(strata_repo_init(repo) == STRATA_E_ALREADY_EXISTS);
  strata_repo* r = NULL;
  CHECK(strata_repo_open(repo, 0, 0, &r) == STRATA_OK);
  strata_backup_params p;
  strata_backup_params_init(&p);
  p.image = disk;
  p.format = "raw";
  p.source = STRATA_SOURCE_FULL;
  strata_backup_result res;
  memset(&res, 0, sizeof res);
  res.struct_size = sizeof res;
  CHECK(strata_backup(r, &p, &res) == STRATA_OK);
  CHECK(strlen(res.id) == 32 && res.parent[0] == 0);
  CHECK(res.data_bytes == (1 << 20) + (512 << 10));

  /* A change, an incremental by scan. */
  write_at(disk, 2 << 20, 'c', 64 << 10);
  p.source = STRATA_SOURCE_SCAN;
  strata_backup_result inc;
  memset(&inc, 0, sizeof inc);
  inc.struct_size = sizeof inc;
  CHECK(strata_backup(r, &p, &inc) == STRATA_OK);
  CHECK(strcmp(inc.parent, res.id) == 0);

  /* Cancelled at the first progress report: nothing new in the catalog. */
  write_at(disk, 3 << 20, 'd', 1 << 20);
  p.progress = cancel_at_once;
  CHECK(strata_backup(r, &p, NULL) == STRATA_E_CANCELLED);
  p.progress = NULL;
  struct listing l;
  memset(&l, 0, sizeof l);
  CHECK(strata_list(r, on_backup, &l) == STRATA_OK);
  CHECK(l.n == 2 && strcmp(l.last_id, inc.id) == 0);
  strata_repo_close(r);

  /* Readers share the repository. */
  strata_repo *r1 = NULL, *r2 = NULL;
  CHECK(strata_repo_open(repo, 1, 0, &r1) == STRATA_OK);
  CHECK(strata_repo_open(repo, 1, 0, &r2) == STRATA_OK);
  CHECK(strata_repo_open(repo, 0, 0, &r) == STRATA_E_BUSY);
  CHECK(strata_verify(r1, NULL, NULL, NULL) == STRATA_OK);
  CHECK(strata_restore(r2, inc.id, out, NULL, NULL) == STRATA_OK);
  write_at(disk, 3 << 20, 0, 1 << 20); /* undo the change of the cancelled backup */
  CHECK(same_files(out, disk));
  CHECK(strata_restore(r2, "nosuchid", out, NULL, NULL) == STRATA_E_NOT_FOUND);
  strata_repo_close(r1);
  strata_repo_close(r2);

  /* The tracker from C. */
  char trk[4096];
  snprintf(trk, sizeof trk, "%s/trk", argv[1]);
  strata_tracker* t = NULL;
  CHECK(strata_tracker_create(trk, kDisk, 0, &t) == STRATA_OK);
  CHECK(strata_tracker_mark(t, 4096, 10) == STRATA_OK);
  CHECK(strata_tracker_checkpoint(t, "a", NULL) == STRATA_OK);
  CHECK(strata_tracker_close(t) == STRATA_OK);

  if (failures) {
    fprintf(stderr, "C API: %d checks failed\n", failures);
    return 1;
  }
  printf("C API: all checks passed\n");
  return 0;
}
