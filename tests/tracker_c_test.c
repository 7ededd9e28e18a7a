/* The plain C interface (include/strata/strata.h: the tracker), compiled as C:
 * create, mark, checkpoint, iterate changed extents, error codes, reopen. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "strata/strata.h"

static int failures = 0;
#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, \
              __LINE__, #cond, strata_last_error());                        \
      ++failures;                                                           \
    }                                                                       \
  } while (0)

/* Collects the runs of an iterator into arrays; returns the count. */
static int Collect(strata_extent_iter* it, uint64_t* offs, uint64_t* lens, int max) {
  int n = 0;
  uint64_t o, l;
  while (strata_extent_iter_next(it, &o, &l)) {
    if (n < max) {
      offs[n] = o;
      lens[n] = l;
    }
    ++n;
  }
  return n;
}

int main(void) {
  char dir[] = "/tmp/strata-c-test-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  char state[512];
  snprintf(state, sizeof state, "%s/st", dir);

  strata_tracker* t = NULL;
  CHECK(strata_tracker_create(state, 10 * 65536 + 5, 0, &t) == STRATA_OK);
  if (!t) return 1;
  CHECK(strata_tracker_disk_size(t) == 10 * 65536 + 5);
  uint64_t id_a = 0, id_b = 0;
  CHECK(strata_tracker_checkpoint(t, "a", &id_a) == STRATA_OK);
  CHECK(strata_tracker_mark(t, 65536, 1) == STRATA_OK);
  CHECK(strata_tracker_mark(t, 3 * 65536 - 1, 2) == STRATA_OK); /* blocks 2 and 3 */
  CHECK(strata_tracker_mark(t, 10 * 65536 + 4, 1) == STRATA_OK); /* last, partial block */
  CHECK(strata_tracker_checkpoint(t, "b", &id_b) == STRATA_OK);
  CHECK(id_b > id_a);
  CHECK(strata_tracker_mark(t, 0, 1) == STRATA_OK);

  /* Errors: codes and a message naming the problem. */
  CHECK(strata_tracker_checkpoint(t, "a", NULL) == STRATA_E_ALREADY_EXISTS);
  CHECK(strstr(strata_last_error(), "'a'") != NULL);
  CHECK(strata_tracker_mark(t, 10 * 65536 + 5, 1) == STRATA_E_INVALID_ARGUMENT);
  strata_extent_iter* it = NULL;
  CHECK(strata_tracker_changed_since(t, "nope", &it) == STRATA_E_NOT_FOUND);
  CHECK(it == NULL);
  strata_tracker* second = NULL;
  CHECK(strata_tracker_open(state, &second) == STRATA_E_BUSY); /* locked */
  CHECK(second == NULL);

  uint64_t offs[8], lens[8];
  CHECK(strata_tracker_changed_between(t, "a", "b", &it) == STRATA_OK);
  int n = Collect(it, offs, lens, 8);
  CHECK(n == 2);
  CHECK(offs[0] == 65536 && lens[0] == 3 * 65536);
  CHECK(offs[1] == 10 * 65536 && lens[1] == 5); /* clipped to the disk */
  CHECK(strata_extent_iter_bytes(it) == 3 * 65536 + 5);
  strata_extent_iter_free(it);

  CHECK(strata_tracker_changed_since(t, "a", &it) == STRATA_OK);
  n = Collect(it, offs, lens, 8);
  CHECK(n == 2 && offs[0] == 0 && lens[0] == 4 * 65536);
  strata_extent_iter_free(it);
  CHECK(strata_tracker_close(t) == STRATA_OK);

  /* Reopen: the same answers; remove merges forward. */
  t = NULL;
  CHECK(strata_tracker_open(state, &t) == STRATA_OK);
  if (!t) return 1;
  CHECK(strata_tracker_remove(t, "b") == STRATA_OK);
  CHECK(strata_tracker_changed_since(t, "a", &it) == STRATA_OK);
  n = Collect(it, offs, lens, 8);
  CHECK(n == 2 && offs[0] == 0 && lens[0] == 4 * 65536 && offs[1] == 10 * 65536);
  strata_extent_iter_free(it);
  CHECK(strata_tracker_close(t) == STRATA_OK);
  CHECK(strata_tracker_close(NULL) == STRATA_OK);

  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
  if (failures) {
    fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  printf("C API: all checks passed\n");
  return 0;
}
