// `strata mount` and `strata umount` run in the helper executable
// strata-mount (tools/mount_cli.cc): libfuse3 would otherwise be loaded by
// every start of strata.
#include "tools/commands.h"
#include "tools/live_cli.h"

namespace strata::cli {
namespace {

int Mount(int argc, char** argv) { return ExecHelper("strata-mount", "STRATA_MOUNT_HELPER", "mount", argc, argv); }
int Umount(int argc, char** argv) { return ExecHelper("strata-mount", "STRATA_MOUNT_HELPER", "umount", argc, argv); }

Registrar r1("mount", "mount a backup point as a read-only file, and its partitions (FUSE)", &Mount);
Registrar r2("umount", "undo 'strata mount'", &Umount);

}  // namespace
}  // namespace strata::cli
