// strata-live: the live-VM half of `strata backup` and `strata restore`
// (tools/live_cli.cc), run by `strata` through tools/live_dispatch.cc.
// Usage: strata-live backup|restore ARGS... (the same arguments as strata's).
#include <cstdio>
#include <cstring>

#include "tools/live_cli.h"

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "backup") == 0) return strata::cli::LiveBackupMain(argc - 1, argv + 1);
  if (argc >= 2 && std::strcmp(argv[1], "restore") == 0) return strata::cli::LiveRestoreMain(argc - 1, argv + 1);
  std::fprintf(stderr, "strata-live: run by strata: use 'strata backup --nbd|--qmp|--libvirt' or "
                       "'strata restore --format qcow2|--nbd'\n");
  return 2;
}
