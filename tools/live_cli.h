// `strata backup --nbd|--qmp|--libvirt ...` and `strata restore --format
// qcow2|--nbd URI` (issue 14), kept apart from cmd_backup.cc, which hands
// these command lines to the helper executable strata-live (ExecLive).
#ifndef STRATA_TOOLS_LIVE_CLI_H_
#define STRATA_TOOLS_LIVE_CLI_H_

#include <string>

namespace strata::cli {

// Whether the command line names a live source (--nbd, --qmp, --libvirt).
bool IsLiveBackup(int argc, char** argv);
int LiveBackupMain(int argc, char** argv);
// Whether the command line asks for a qcow2 or NBD restore output.
bool IsLiveRestore(int argc, char** argv);
int LiveRestoreMain(int argc, char** argv);

// Where helper executable `name` (strata-live, strata-mount) is: $env_var,
// else beside this executable, else the installed libexec directory.
std::string HelperPath(const char* name, const char* env_var);
// Replaces this process by `HELPER COMMAND argv[1..]`; returns (1, after
// printing why) only if that fails.
int ExecHelper(const char* name, const char* env_var, const char* command, int argc, char** argv);
// The two for strata-live ($STRATA_LIVE_HELPER).
std::string LiveHelperPath();
int ExecLive(const char* command, int argc, char** argv);

}  // namespace strata::cli

#endif  // STRATA_TOOLS_LIVE_CLI_H_
