// `strata backup --nbd|--qmp|--libvirt ...` and `strata restore --format
// qcow2|--nbd URI` (issue 14), kept apart from cmd_backup.cc, which hands
// these command lines over.
#ifndef STRATA_TOOLS_LIVE_CLI_H_
#define STRATA_TOOLS_LIVE_CLI_H_

namespace strata::cli {

// Whether the command line names a live source (--nbd, --qmp, --libvirt).
bool IsLiveBackup(int argc, char** argv);
int LiveBackupMain(int argc, char** argv);
// Whether the command line asks for a qcow2 or NBD restore output.
bool IsLiveRestore(int argc, char** argv);
int LiveRestoreMain(int argc, char** argv);

}  // namespace strata::cli

#endif  // STRATA_TOOLS_LIVE_CLI_H_
