// `strata backup --nbd|--qmp|--libvirt` and `strata restore --format
// qcow2|--nbd` (issue 14; engine/live does the work), in the helper
// executable strata-live: `strata` execs it for these command lines
// (tools/live_dispatch.cc), so that libvirt and libnbd, with their ~50
// libraries, are loaded only by the commands that use them.
#include <sys/stat.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/live/live.h"
#include "strata/units.h"
#include "tools/cli_util.h"
#include "tools/live_cli.h"
#include "tools/progress.h"

namespace strata::cli {

namespace {

using Json = nlohmann::ordered_json;


constexpr char kLiveHelp[] = R"(Usage:
  strata backup --repo REPO --nbd URI [--bitmap NAME | --full] [OPTIONS]
  strata backup --repo REPO --qmp SOCKET --node NODE [--full]
                [--qga SOCKET --quiesce [--quiesce-mount PATH]...] [OPTIONS]
  strata backup --repo REPO --libvirt DOMAIN [--disk TARGET]... [--uri URI]
                [--full] [--quiesce] [OPTIONS]

Backs up running VMs through NBD (docs/design/live.md).

--nbd URI     any NBD export (nbd+unix:///NAME?socket=PATH, nbd://HOST:PORT/NAME);
              holes and zeros (base:allocation) are not read. With --bitmap
              NAME, only what qemu:dirty-bitmap:NAME marks dirty is read: an
              incremental whose start is where the disk's newest backup ends
              (or --start-point NAME); whoever arranged the export vouches for
              the bitmap. --end-point NAME records the QEMU bitmap that holds
              writes from this export's point on.
--qmp SOCKET  a running QEMU or qemu-storage-daemon: strata adds a checkpoint
              bitmap per backup, arranges a point-in-time view (blockdev-backup
              sync=none into a scratch qcow2), exports it with the changes on a
              private NBD socket, reads it and tears everything down. NODE is
              the disk's format node. With --qga SOCKET --quiesce the guest's
              filesystems (or --quiesce-mount PATH ones) are frozen for the QMP
              transaction only.
--libvirt DOMAIN  libvirt checkpoints and pull-mode backups: all chosen disks
              (default all) at one point in time, each a disk of the repository
              named libvirt:DOMAIN:TARGET.
An incremental is taken when the last backup's bitmap or checkpoint is
intact; if it is missing or inconsistent the disk is read whole and only
chunks that differ from the last backup are stored (a --scan), and the output
says so. The first backup of a disk is full. --full forces a full backup.

Options:
  --disk NAME        (--nbd, --qmp) the disk's name in the repository
  --state-dir DIR    sockets, scratch images and records of runs in progress
                     (default /run/strata/live for root); a run finishes the
                     cleanup of a killed one
  --granularity N    block size of a full backup (default 64K)
  --connections N    NBD connections when the server offers multi-conn (default 4)
  --level N  --chunk-size N  --queue-depth N  --workers N  --memory N
  --lock-wait SECONDS  --json
Exit status: 0 success, 1 failure, 2 usage error.
)";

Status ParseNum(const Args& a, const char* flag, uint64_t lo, uint64_t hi, uint64_t* out) {
  auto v = a.Get(flag);
  if (!v) return Status::Ok();
  auto n = ParseSize(*v);
  if (!n || *n < lo || *n > hi) {
    return Status::InvalidArgument(std::string(flag) + " must be between " + std::to_string(lo) + " and " +
                                   std::to_string(hi));
  }
  *out = *n;
  return Status::Ok();
}

Status ParseOptions(const Args& a, PipelineOptions* o, live::LiveOptions* lo) {
  uint64_t level = static_cast<uint64_t>(o->level), chunk = o->chunk_size, qd = o->queue_depth,
           workers = o->workers, mem = o->memory_limit, conns = lo->connections;
  STRATA_RETURN_IF_ERROR(ParseNum(a, "--level", 1, 19, &level));
  STRATA_RETURN_IF_ERROR(ParseNum(a, "--chunk-size", 4096, 64 << 20, &chunk));
  STRATA_RETURN_IF_ERROR(ParseNum(a, "--queue-depth", 1, 1024, &qd));
  STRATA_RETURN_IF_ERROR(ParseNum(a, "--workers", 1, 256, &workers));
  STRATA_RETURN_IF_ERROR(ParseNum(a, "--memory", 16 << 20, uint64_t{1} << 40, &mem));
  STRATA_RETURN_IF_ERROR(ParseNum(a, "--connections", 1, 16, &conns));
  o->level = static_cast<int>(level);
  o->chunk_size = static_cast<uint32_t>(chunk);
  o->queue_depth = static_cast<unsigned>(qd);
  o->workers = static_cast<unsigned>(workers);
  o->memory_limit = mem;
  lo->connections = static_cast<unsigned>(conns);
  if (auto g = a.Get("--granularity")) {
    auto gb = ParseSize(*g);
    if (!gb) return gb.error();
    STRATA_RETURN_IF_ERROR(Granularity::FromBytes(*gb).status());
    lo->granularity = *gb;
  }
  return Status::Ok();
}


Json PointJson(const ChainPoint& p) {
  if (p.is_none()) return nullptr;
  return Json{{"kind", PointKindName(p.kind)}, {"source", Id128ToHex(p.source)}, {"seq", p.seq},
              {"name", p.name}, {"description", p.Describe()}};
}

}  // namespace

int LiveBackupMain(int argc, char** argv) {
  const char* tool = "strata backup";
  std::set<std::string> vf = {"--repo",   "--nbd",        "--bitmap",      "--start-point", "--end-point",
                              "--qmp",    "--node",       "--qga",         "--quiesce-mount", "--libvirt",
                              "--disk",   "--uri",        "--state-dir",   "--granularity", "--connections",
                              "--level",  "--chunk-size", "--queue-depth", "--workers",     "--memory",
                              "--lock-wait"};
  std::set<std::string> bf = {"--help", "--json", "--full", "--quiesce"};
  bf.insert(kProgressFlags.begin(), kProgressFlags.end());
  auto a = Args::Parse(argc, argv, 1, vf, bf);
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::fputs(kLiveHelp, stdout);
    return kExitOk;
  }
  const int sources = a->Has("--nbd") + a->Has("--qmp") + a->Has("--libvirt");
  if (sources != 1) return Usage(tool, "choose one of --nbd, --qmp, --libvirt");
  if (!a->Has("--repo")) return Usage(tool, "--repo is required");
  if (!a->positional().empty()) return Usage(tool, "a live source takes no IMAGE argument");
  if (a->Has("--bitmap") && !a->Has("--nbd")) return Usage(tool, "--bitmap goes with --nbd (QMP and libvirt make their own)");
  if (a->Has("--bitmap") && a->Has("--full")) return Usage(tool, "choose --bitmap NAME or --full");
  if ((a->Has("--start-point") || a->Has("--end-point")) && !a->Has("--nbd")) {
    return Usage(tool, "--start-point and --end-point go with --nbd");
  }
  if (a->Has("--nbd") && !a->Has("--bitmap") && !a->Has("--full")) return Usage(tool, "--nbd needs --bitmap NAME or --full");
  if (a->Has("--qmp") != a->Has("--node")) return Usage(tool, "--qmp SOCKET goes with --node NODE");
  if ((a->Has("--qga") || a->Has("--quiesce-mount")) && !a->Has("--qmp")) {
    return Usage(tool, "--qga and --quiesce-mount go with --qmp (libvirt uses its own agent channel)");
  }
  if (a->Has("--qmp") && a->Has("--quiesce") != a->Has("--qga")) return Usage(tool, "--quiesce with --qmp needs --qga SOCKET");
  if (a->Has("--quiesce") && a->Has("--nbd")) return Usage(tool, "--quiesce goes with --qmp or --libvirt");
  if (a->Has("--uri") && !a->Has("--libvirt")) return Usage(tool, "--uri goes with --libvirt");
  if (a->Has("--granularity") && !a->Has("--full") && !a->Has("--qmp") && !a->Has("--libvirt")) {
    return Usage(tool, "--granularity sets a full backup's block size");
  }
  auto oo = OutputOptions::From(*a);
  if (!oo) return Usage(tool, oo.error().message());
  live::LiveOptions opt;
  if (Status s = ParseOptions(*a, &opt.pipeline, &opt); !s.ok()) return Usage(tool, s.message());
  Progress progress("backup", *oo);
  opt.pipeline.progress = [&](uint64_t d, uint64_t t) { progress.Update(d, t); };
  auto wait = LockWait(*a);
  if (!wait) return Usage(tool, wait.error().message());
  opt.full = a->Has("--full");
  opt.state_dir = a->Get("--state-dir").value_or("");
  if (!a->Has("--libvirt")) opt.disk_name = a->Get("--disk").value_or("");

  RepositoryOptions ro;
  ro.lock_wait = *wait;
  auto repo = Repository::Open(*a->Get("--repo"), ro);
  if (!repo) return Fail(tool, repo.error());
  for (const std::string& n : (*repo)->recovery_notes()) std::fprintf(stderr, "%s: note: %s\n", tool, n.c_str());

  Result<live::LiveResult> r = Status::InvalidArgument("no live source");  // set below
  if (a->Has("--nbd")) {
    live::NbdSource src;
    src.uri = *a->Get("--nbd");
    src.bitmap = a->Get("--bitmap").value_or("");
    src.start_point = a->Get("--start-point").value_or("");
    src.end_point = a->Get("--end-point").value_or("");
    r = live::BackupNbdExport(**repo, src, opt);
  } else if (a->Has("--qmp")) {
    live::QmpSource src;
    src.socket = *a->Get("--qmp");
    src.node = *a->Get("--node");
    src.qga_socket = a->Get("--qga").value_or("");
    src.quiesce = a->Has("--quiesce");
    src.quiesce_mounts = a->All("--quiesce-mount");
    if (!src.quiesce_mounts.empty()) src.quiesce = true;
    r = live::BackupQemuNode(**repo, src, opt);
  } else {
    live::LibvirtSource src;
    src.domain = *a->Get("--libvirt");
    src.uri = a->Get("--uri").value_or("");
    src.disks = a->All("--disk");
    src.quiesce = a->Has("--quiesce");
    r = live::BackupLibvirtDomain(**repo, src, opt);
  }
  progress.Clear();
  if (!r) return Fail(tool, r.error());
  if (a->Has("--json")) {
    Json j;
    j["quiesced"] = r->quiesced;
    j["notes"] = r->notes;
    j["disks"] = Json::array();
    for (const live::LiveDisk& d : r->disks) {
      const ArchiveHeader& h = d.backup.entry.header;
      const BackupStats& st = d.backup.stats;
      std::vector<std::string> notes = d.notes;
      notes.insert(notes.end(), d.backup.notes.begin(), d.backup.notes.end());
      j["disks"].push_back({{"id", IdToHex(h.id)},
                            {"disk", d.disk_name},
                            {"mode", d.mode},
                            {"parent", h.is_full() ? Json(nullptr) : Json(IdToHex(h.parent_id))},
                            {"start", PointJson(h.start)},
                            {"end", PointJson(h.end)},
                            {"disk_size", h.disk_size},
                            {"changed_bytes", st.planned_bytes},
                            {"read_bytes", st.read_bytes},
                            {"data_bytes", st.data_bytes},
                            {"zero_bytes", st.zero_bytes},
                            {"skipped_bytes", st.skipped_bytes},
                            {"stored_bytes", st.stored_bytes},
                            {"archive_bytes", st.archive_bytes},
                            {"seconds", st.seconds},
                            {"notes", notes}});
    }
    PrintJson(j);
    return kExitOk;
  }
  for (const std::string& n : r->notes) std::fprintf(stderr, "%s: note: %s\n", tool, n.c_str());
  for (const live::LiveDisk& d : r->disks) {
    const ArchiveHeader& h = d.backup.entry.header;
    const BackupStats& st = d.backup.stats;
    for (const std::string& n : d.notes) std::fprintf(stderr, "%s: note: %s\n", tool, n.c_str());
    for (const std::string& n : d.backup.notes) std::fprintf(stderr, "%s: note: %s\n", tool, n.c_str());
    std::printf("backup %s (%s) of %s\n", IdToHex(h.id).c_str(), d.mode.c_str(), d.disk_name.c_str());
    if (!h.is_full()) {
      std::printf("  from %s (backup %s)\n", h.start.Describe().c_str(), IdToHex(h.parent_id).substr(0, 8).c_str());
    }
    std::printf("  ends at %s%s\n", h.end.Describe().c_str(), r->quiesced ? ", quiesced" : "");
    std::printf("  changed %s, read %s, data %s, zeros %s%s, stored %s\n", FormatBytes(st.planned_bytes).c_str(),
                FormatBytes(st.read_bytes).c_str(), FormatBytes(st.data_bytes).c_str(),
                FormatBytes(st.zero_bytes).c_str(),
                st.skipped_bytes ? (", unchanged " + FormatBytes(st.skipped_bytes)).c_str() : "",
                FormatBytes(st.stored_bytes).c_str());
    std::printf("  %.2f s\n", st.seconds);
  }
  return kExitOk;
}

int LiveRestoreMain(int argc, char** argv) {
  const char* tool = "strata restore";
  auto a = Args::Parse(argc, argv, 1,
                       {"--repo", "--backup", "--disk", "--lock-wait", "--format", "--nbd", "--queue-depth",
                        "--workers", "--memory"},
                       {"--help", "--json", "--force", "--progress", "--quiet", "--verbose"});
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::puts(
        "Usage: strata restore --repo REPO [--backup ID|latest] [--disk NAME] --format qcow2 [--force] OUTPUT\n"
        "       strata restore --repo REPO [--backup ID|latest] [--disk NAME] --nbd URI\n\n"
        "--format qcow2 writes OUTPUT as a new qcow2 image (made by qemu-img, written\n"
        "through qemu-nbd: QEMU's own code writes the qcow2; zero ranges stay\n"
        "unallocated), ready to attach to a VM. --format raw is the default restore.\n"
        "--nbd URI writes into a writable NBD export of at least the disk's size (e.g.\n"
        "a running QEMU's block-export-add ... writable=true); zero ranges are written\n"
        "as zeros.");
    return kExitOk;
  }
  const std::string format = a->Get("--format").value_or("raw");
  if (format != "raw" && format != "qcow2") return Usage(tool, "--format must be raw or qcow2");
  if (a->Has("--nbd") && a->Has("--format")) return Usage(tool, "--nbd writes guest bytes: no --format");
  if (!a->Has("--repo")) return Usage(tool, "--repo is required");
  if (a->Has("--nbd") != a->positional().empty()) return Usage(tool, "expected one OUTPUT, or --nbd URI");
  if (format == "raw" && !a->Has("--nbd")) {
    return Usage(tool, "--format raw is the plain restore: drop --format");
  }
  auto oo = OutputOptions::From(*a);
  if (!oo) return Usage(tool, oo.error().message());
  PipelineOptions opt;
  live::LiveOptions unused;
  if (Status s = ParseOptions(*a, &opt, &unused); !s.ok()) return Usage(tool, s.message());
  Progress progress("restore", *oo);
  opt.progress = [&](uint64_t d, uint64_t t) { progress.Update(d, t); };
  auto wait = LockWait(*a);
  if (!wait) return Usage(tool, wait.error().message());
  std::string out = a->Has("--nbd") ? *a->Get("--nbd") : a->positional()[0];
  if (!a->Has("--nbd")) {
    struct stat st;
    if (::lstat(out.c_str(), &st) == 0) {
      if (!a->Has("--force") || !S_ISREG(st.st_mode)) {
        return Fail(tool, Status::AlreadyExists(out + ": exists (use --force to replace a file)"));
      }
      if (::unlink(out.c_str()) != 0) return Fail(tool, Status::FromErrno(errno, out));
    }
  }
  RepositoryOptions ro;
  ro.read_only = true;
  ro.lock_wait = *wait;
  auto repo = Repository::Open(*a->Get("--repo"), ro);
  if (!repo) return Fail(tool, repo.error());
  std::optional<DiskInfo> disk;
  if (auto d = a->Get("--disk")) {
    auto di = (*repo)->DiskNamed(*d);
    if (!di) return Fail(tool, di.error());
    disk = *di;
  }
  auto e = (*repo)->Find(a->Get("--backup").value_or("latest"), disk ? &disk->id : nullptr);
  if (!e) return Fail(tool, e.error(), true);
  const std::string id = IdToHex((*e)->id());
  auto stats = a->Has("--nbd") ? live::RestoreToNbd(**repo, id, out, opt) : live::RestoreToQcow2(**repo, id, out, opt);
  progress.Clear();
  if (!stats) return Fail(tool, stats.error());
  if (a->Has("--json")) {
    PrintJson(Json{{"id", id},
                   {"output", out},
                   {"format", a->Has("--nbd") ? "nbd" : "qcow2"},
                   {"chain", stats->chain_length},
                   {"data_bytes", stats->data_bytes},
                   {"zero_bytes", stats->zero_bytes},
                   {"seconds", stats->seconds}});
  } else {
    std::printf("restored %s (chain of %zu) to %s (%s): %s data, %s zeros, %.2f s\n", id.c_str(),
                stats->chain_length, out.c_str(), a->Has("--nbd") ? "NBD export" : "qcow2",
                FormatBytes(stats->data_bytes).c_str(), FormatBytes(stats->zero_bytes).c_str(), stats->seconds);
  }
  return kExitOk;
}

}  // namespace strata::cli
