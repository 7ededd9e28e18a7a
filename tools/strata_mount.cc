// strata-mount: `strata mount` and `strata umount` (tools/mount_cli.cc), run
// by `strata` through tools/cmd_mount.cc.
// Usage: strata-mount mount|umount ARGS... (the same arguments as strata's).
#include <cstdio>
#include <cstring>

#include "tools/mount_cli.h"

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "mount") == 0) return strata::cli::MountMain(argc - 1, argv + 1);
  if (argc >= 2 && std::strcmp(argv[1], "umount") == 0) return strata::cli::UmountMain(argc - 1, argv + 1);
  std::fprintf(stderr, "strata-mount: run by strata: use 'strata mount' or 'strata umount'\n");
  return 2;
}
