// `strata mount` and `strata umount` (tools/mount_cli.cc), built into the
// helper executable strata-mount: libfuse3 stays out of the `strata`
// executable, whose every other command would otherwise load it.
// tools/cmd_mount.cc hands these commands to the helper.
#ifndef STRATA_TOOLS_MOUNT_CLI_H_
#define STRATA_TOOLS_MOUNT_CLI_H_

namespace strata::cli {

int MountMain(int argc, char** argv);
int UmountMain(int argc, char** argv);

}  // namespace strata::cli

#endif  // STRATA_TOOLS_MOUNT_CLI_H_
