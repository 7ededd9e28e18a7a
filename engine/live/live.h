// Backups of running VMs (issue 14): NBD pull mode with QEMU's dirty
// bitmaps, driven over QMP or through libvirt. Design: docs/design/live.md.
//
// Each entry point arranges a point in time with the system that owns the
// disk, exports it over NBD, reads it through formats/nbd (an Image) with
// its change set, and hands Image + changes + start/end points to the
// backup job (BackupToRepository with a caller-computed change set). It
// tears down what it made on every path; what a killed run left behind is
// removed by the next run before it does anything else.
//
// Which backup is taken, and why, is always said (LiveDisk::mode and the
// notes): "full", "incremental", or "scan" when the bitmap or checkpoint the
// last backup ended at is missing or inconsistent (reads the disk, stores
// only chunks that differ from the last backup): never a silent full
// backup, never a silent gap.
//
// Thread safety: one call at a time per process; runs against the same QEMU
// (QMP socket) or domain are serialised by a lock in the state directory.
#ifndef STRATA_ENGINE_LIVE_LIVE_H_
#define STRATA_ENGINE_LIVE_LIVE_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "strata/jobs.h"
#include "strata/repository.h"

namespace strata::live {

struct LiveOptions {
  // Private state: locks, NBD sockets, scratch images, records of what is
  // in progress (so a later run can finish a killed run's cleanup). Empty:
  // DefaultStateDir().
  std::string state_dir;
  bool full = false;                    // a full backup even when an incremental is possible
  std::string disk_name;                // repository disk name (default: from the source)
  std::optional<uint64_t> granularity;  // full backups (default 64 KiB)
  unsigned connections = 4;             // NBD connections when multi-conn is offered
  PipelineOptions pipeline;
  std::string parent = "latest";
  // Test hook: called with the name of each step as it starts
  // ("cleanup", "transaction", "export", "read", "teardown", "commit").
  std::function<void(const char*)> on_step;
};

struct LiveDisk {
  std::string disk_name;   // in the repository
  std::string mode;        // "full", "incremental" or "scan"
  BackupResult backup;
  std::vector<std::string> notes;
};

struct LiveResult {
  std::vector<LiveDisk> disks;
  std::vector<std::string> notes;  // cleanup of earlier runs, freezes, ...
  bool quiesced = false;
};

// /run/strata/live for root, else $XDG_RUNTIME_DIR/strata-live or
// /tmp/strata-live-UID.
std::string DefaultStateDir();

// `strata backup --nbd URI [--bitmap NAME | --full]`: any NBD export. With
// `bitmap`, an incremental of what the export's qemu:dirty-bitmap:NAME marks;
// whoever arranged the export vouches that the bitmap holds every write since
// the parent's end point (`start_point`, default: the point the disk's
// newest backup ends at). `end_point` names the QEMU bitmap that records
// writes from this export's point on (none when empty).
struct NbdSource {
  std::string uri;
  std::string bitmap;
  std::string start_point, end_point;
};
Result<LiveResult> BackupNbdExport(Repository& repo, const NbdSource& src, const LiveOptions& opt);

// `strata backup --qmp SOCKET --node NODE`: the whole pull-mode dance
// against a running QEMU or qemu-storage-daemon (docs/design/live.md).
// NODE is the node name of the disk's format node (e.g. the qcow2 node);
// its checkpoint bitmaps are persistent when the format allows.
struct QmpSource {
  std::string socket;
  std::string node;
  // Freeze the guest's filesystems through its agent for the transaction
  // only: all of them, or `quiesce_mounts` (as the guest sees them).
  std::string qga_socket;
  bool quiesce = false;
  std::vector<std::string> quiesce_mounts;
};
Result<LiveResult> BackupQemuNode(Repository& repo, const QmpSource& src, const LiveOptions& opt);

// `strata backup --libvirt DOMAIN`: libvirt checkpoints and pull-mode
// virDomainBackupBegin; every chosen disk (default: all that can be
// backed up) at one point in time, each its own disk in the repository.
struct LibvirtSource {
  std::string domain;
  std::string uri;                  // connection URI (default: libvirt's own default)
  std::vector<std::string> disks;   // target names (vda, sda, ...); empty: all
  bool quiesce = false;             // VIR_DOMAIN_BACKUP_BEGIN_... through the guest agent
};
Result<LiveResult> BackupLibvirtDomain(Repository& repo, const LibvirtSource& src, const LiveOptions& opt);

// `strata restore --format qcow2 OUTPUT`: a new qcow2 image made by qemu-img
// and written through qemu-nbd (QEMU's own code writes the qcow2; zero
// ranges are left unallocated). A failed restore removes OUTPUT.
Result<RestoreStats> RestoreToQcow2(Repository& repo, const std::string& which, const std::string& output,
                                    const PipelineOptions& opt);
// `strata restore --nbd URI`: writes the backup's view into a writable NBD
// export of at least the disk's size (e.g. a running QEMU's export); ranges
// that are zero in the backup are written as zeros.
Result<RestoreStats> RestoreToNbd(Repository& repo, const std::string& which, const std::string& uri,
                                  const PipelineOptions& opt);

}  // namespace strata::live

#endif  // STRATA_ENGINE_LIVE_LIVE_H_
