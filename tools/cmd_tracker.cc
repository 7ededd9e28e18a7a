// `strata tracker init|mark|list|remove|resize` and `strata checkpoint`: the
// change tracker (issue 3) from the command line, for scripts and tests.
// Each invocation opens the state directory, does one thing and closes it
// cleanly. docs/design/tracker.md.
#include <chrono>
#include <cinttypes>
#include <cstdlib>
#include <optional>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>
#include <string>

#include "strata/tracker.h"
#include "strata/tracker_control.h"
#include "strata/quiesce.h"
#include "strata/id128.h"
#include "tools/cli_util.h"
#include "tools/quiesce_window.h"
#include "tools/commands.h"

namespace strata::cli {
namespace {

constexpr char kTrackerTool[] = "strata tracker";
constexpr char kCheckpointTool[] = "strata checkpoint";

constexpr char kTrackerHelp[] = R"(Usage: strata tracker init --tracker DIR --size BYTES [--granularity BYTES]
                           [--no-intent-log]
       strata tracker mark --tracker DIR OFFSET LENGTH
       strata tracker list --tracker DIR
       strata tracker remove --tracker DIR NAME
       strata tracker resize --tracker DIR --size BYTES

Dirty-block tracking for one disk in a state directory.
  init     create a tracker for a disk of BYTES (granularity default 64K);
           --no-intent-log trades crash safety for fewer fsyncs (after an
           unclean shutdown the changes since the last checkpoint are lost)
  mark     record that bytes [OFFSET, OFFSET+LENGTH) were written
  list     checkpoints with creation time, changed bytes and whether each
           was quiesced (taken with 'strata checkpoint --quiesce' inside a
           freeze window that held)
  remove   drop checkpoint NAME; its changes merge into the next generation
  resize   change the disk size (growing marks the new area dirty)
Sizes accept K, M, G, T suffixes. Take checkpoints with 'strata checkpoint';
print changes with 'extent-dump --tracker DIR --since NAME [--to NAME]'.
While another process owns the tracker and serves DIR/control.sock (e.g.
nbdkit --filter=strata), mark, list and remove go through it; resize needs
the directory itself and is refused then.

Options:
  --json   machine-readable output
Exit status: 0 success, 1 failure, 2 usage error.
)";

constexpr char kCheckpointHelp[] = R"(Usage: strata checkpoint --tracker DIR [--json] NAME
       strata checkpoint --tracker DIR NAME --quiesce TARGET... [--exec CMD]
                         [--deadline SECONDS] [--hooks DIR] [--protect PATH]...

Seals the tracker's active generation as checkpoint NAME (unique) and starts
a new one. Changes since NAME: 'extent-dump --tracker DIR --since NAME'.
While another process owns the tracker and serves DIR/control.sock (e.g.
nbdkit --filter=strata, which holds its writes off meanwhile), the
checkpoint is taken by that process; otherwise DIR is opened here.

With --quiesce (repeatable; a mount point, block device, partition or
device-mapper volume) the checkpoint is taken inside a freeze window: hook
scripts freeze (--hooks DIR, QEMU fsfreeze-hook convention), the filesystems
freeze (FIFREEZE), the checkpoint is sealed and --exec CMD runs (e.g. a
storage snapshot), then everything thaws. The window never outlasts
--deadline (default 10 s): if it expires the filesystems are thawed and the
checkpoint is reported as not quiesced. The filesystems holding the tracker
state, --protect paths and / are refused (--force-freeze overrides). The
freeze is journaled in --state-dir (default $STRATA_QUIESCE_DIR or
/run/strata/quiesce) before it happens: if this process is killed inside the
window, 'strata thaw --all' finds and thaws it.
Exit status: 0 success, 1 failure (e.g. NAME exists), 2 usage error.
)";

template <typename T>
void PrintRecovery(const char* tool, const T& t) {
  const RecoveryInfo& r = t.recovery();
  if (!r.clean_shutdown && !r.active_unknown) {
    std::fprintf(stderr, "%s: recovered after an unclean shutdown: %" PRIu64
                 " intent regions, up to %s over-reported\n",
                 tool, r.intent_regions, FormatBytes(r.added_bytes).c_str());
  }
  for (const std::string& p : r.problems) std::fprintf(stderr, "%s: warning: %s\n", tool, p.c_str());
}

// A checkpoint's "id" is its sequence number in the tracker, as a decimal
// string (every id in strata's JSON is a string: docs/cli-json.md).
Json CheckpointJson(const CheckpointInfo& c) {
  return Json{{"name", c.name},
              {"id", std::to_string(c.id)},
              {"created", FormatTime(c.created_unix_ns)},
              {"created_unix_ns", c.created_unix_ns},
              {"changed_bytes", c.changed_bytes},
              {"generation_unknown", c.generation_unknown},
              {"quiesced", c.quiesced}};
}

// Through the tracker's owner when one serves its control socket (e.g. the
// nbdkit filter marking a disk's writes), else the directory itself.
Result<std::unique_ptr<TrackerHandle>> OpenFor(const Args& args, bool read_only) {
  auto dir = args.Get("--tracker");
  if (!dir) return Status::InvalidArgument("--tracker DIR is required");
  HandleOptions o;
  o.read_only = read_only;
  return TrackerHandle::Open(*dir, o);
}

// Resize changes the state files under the exclusive lock: never through
// an owner (whose disk decides the size).
Result<std::unique_ptr<Tracker>> OpenDirect(const Args& args) {
  auto dir = args.Get("--tracker");
  if (!dir) return Status::InvalidArgument("--tracker DIR is required");
  return Tracker::Open(*dir, OpenOptions{});
}

int Init(const Args& args, bool json) {
  auto dir = args.Get("--tracker");
  auto size_text = args.Get("--size");
  if (!dir || !size_text) return Usage(kTrackerTool, "init needs --tracker DIR and --size BYTES");
  if (!args.positional().empty()) return Usage(kTrackerTool, "init takes no positional arguments");
  auto size = ParseSize(*size_text);
  if (!size) return Fail(kTrackerTool, size.error(), true);
  if (*size == 0 || *size > kMaxDiskSize) return Usage(kTrackerTool, "--size must be 1 byte .. 8 EiB");
  TrackerOptions o;
  o.disk_size = *size;
  if (auto g = args.Get("--granularity")) {
    auto gb = ParseSize(*g);
    if (!gb) return Fail(kTrackerTool, gb.error(), true);
    o.granularity_bytes = *gb;
  }
  o.intent_log = !args.Has("--no-intent-log");
  auto t = Tracker::Create(*dir, o);
  if (!t) return Fail(kTrackerTool, t.error(), true);
  Status s = (*t)->Close();
  if (!s.ok()) return Fail(kTrackerTool, s);
  if (json) {
    PrintJson(Json{{"tracker", *dir},
                   {"disk_size", o.disk_size},
                   {"granularity", o.granularity_bytes},
                   {"intent_log", o.intent_log}});
  } else {
    std::printf("created tracker %s: %s disk, granularity %s, intent log %s\n", dir->c_str(),
                FormatBytes(o.disk_size).c_str(), FormatBytes(o.granularity_bytes).c_str(),
                o.intent_log ? "on" : "off");
  }
  return kExitOk;
}

int Mark(const Args& args, bool json) {
  const auto& pos = args.positional();
  if (pos.size() != 2) return Usage(kTrackerTool, "mark needs OFFSET and LENGTH");
  auto off = ParseSize(pos[0]);
  if (!off) return Fail(kTrackerTool, off.error(), true);
  auto len = ParseSize(pos[1]);
  if (!len) return Fail(kTrackerTool, len.error(), true);
  auto t = OpenFor(args, false);
  if (!t) return Fail(kTrackerTool, t.error(), true);
  PrintRecovery(kTrackerTool, **t);
  Status s = (*t)->Mark(*off, *len);
  Status c = (*t)->Close();
  if (!s.ok()) return Fail(kTrackerTool, s);
  if (!c.ok()) return Fail(kTrackerTool, c);
  if (json) PrintJson(Json{{"offset", *off}, {"length", *len}});
  return kExitOk;
}

int List(const Args& args, bool json) {
  if (!args.positional().empty()) return Usage(kTrackerTool, "list takes no positional arguments");
  auto t = OpenFor(args, true);
  if (!t) return Fail(kTrackerTool, t.error(), true);
  TrackerHandle& tr = **t;
  auto listed = tr.List();
  if (!listed) return Fail(kTrackerTool, listed.error());
  const std::vector<CheckpointInfo>& list = *listed;
  const RecoveryInfo& r = tr.recovery();
  if (json) {
    Json checkpoints = Json::array();
    for (const auto& c : list) checkpoints.push_back(CheckpointJson(c));
    PrintJson(Json{{"uuid", Id128ToHex(tr.uuid())},
                   {"disk_size", tr.disk_size()},
                   {"granularity", tr.granularity().bytes()},
                   {"intent_log", tr.intent_log_enabled()},
                   {"clean_shutdown", r.clean_shutdown},
                   {"active_unknown", r.active_unknown},
                   {"checkpoints", checkpoints}});
  } else {
    PrintRecovery(kTrackerTool, tr);
    std::printf("%s (tracker %s): %s disk, granularity %s, intent log %s, %zu checkpoints\n", tr.dir().c_str(),
                Id128ToHex(tr.uuid()).c_str(), FormatBytes(tr.disk_size()).c_str(),
                FormatBytes(tr.granularity().bytes()).c_str(),
                tr.intent_log_enabled() ? "on" : "off", list.size());
    std::printf("%8s  %-20s  %-24s %14s  %s\n", "id", "created (UTC)", "name", "changed", "quiesced");
    for (const auto& c : list) {
      std::printf("%8" PRIu64 "  %-20s  %-24s %14s  %s\n", c.id, FormatTime(c.created_unix_ns).c_str(),
                  c.name.c_str(), c.generation_unknown ? "unknown" : FormatBytes(c.changed_bytes).c_str(),
                  c.quiesced ? "yes" : "no");
    }
  }
  return kExitOk;
}

int Remove(const Args& args, bool json) {
  const auto& pos = args.positional();
  if (pos.size() != 1) return Usage(kTrackerTool, "remove needs one checkpoint NAME");
  auto t = OpenFor(args, false);
  if (!t) return Fail(kTrackerTool, t.error(), true);
  PrintRecovery(kTrackerTool, **t);
  Status s = (*t)->Remove(pos[0]);
  Status c = (*t)->Close();
  if (!s.ok()) return Fail(kTrackerTool, s);
  if (!c.ok()) return Fail(kTrackerTool, c);
  if (json) PrintJson(Json{{"removed", pos[0]}});
  else std::printf("removed checkpoint %s\n", pos[0].c_str());
  return kExitOk;
}

int Resize(const Args& args, bool json) {
  auto size_text = args.Get("--size");
  if (!size_text) return Usage(kTrackerTool, "resize needs --size BYTES");
  if (!args.positional().empty()) return Usage(kTrackerTool, "resize takes no positional arguments");
  auto size = ParseSize(*size_text);
  if (!size) return Fail(kTrackerTool, size.error(), true);
  if (*size == 0 || *size > kMaxDiskSize) return Usage(kTrackerTool, "--size must be 1 byte .. 8 EiB");
  auto t = OpenDirect(args);
  if (!t) return Fail(kTrackerTool, t.error(), true);
  PrintRecovery(kTrackerTool, **t);
  Status s = (*t)->Resize(*size);
  Status c = (*t)->Close();
  if (!s.ok()) return Fail(kTrackerTool, s);
  if (!c.ok()) return Fail(kTrackerTool, c);
  if (json) PrintJson(Json{{"disk_size", *size}});
  else std::printf("resized to %s\n", FormatBytes(*size).c_str());
  return kExitOk;
}

int TrackerMain(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kTrackerHelp, stdout);
    return argc < 2 ? kExitUsage : kExitOk;
  }
  std::string sub = argv[1];
  auto args = Args::Parse(argc, argv, 2, {"--tracker", "--size", "--granularity"},
                          {"--json", "--help", "--no-intent-log"});
  if (!args) return Usage(kTrackerTool, args.error().message());
  if (args->Has("--help")) {
    std::fputs(kTrackerHelp, stdout);
    return kExitOk;
  }
  if (sub != "init" && sub != "mark" && sub != "list" && sub != "remove" && sub != "resize") {
    std::string near = ClosestMatch(sub, {"init", "mark", "list", "remove", "resize"});
    return Usage(kTrackerTool, "unknown subcommand '" + sub + "'" +
                                   (near.empty() ? "" : " (did you mean '" + near + "'?)"));
  }
  // A flag that does nothing for this subcommand is a mistake, not a no-op.
  const std::map<std::string, std::set<std::string>> takes = {
      {"--size", {"init", "resize"}}, {"--granularity", {"init"}}, {"--no-intent-log", {"init"}}};
  for (const auto& [flag, subs] : takes) {
    if (args->Has(flag) && !subs.count(sub)) {
      return Usage(kTrackerTool, flag + " does nothing for 'tracker " + sub + "'");
    }
  }
  if (!args->Has("--tracker")) return Usage(kTrackerTool, "--tracker DIR is required");
  bool json = args->Has("--json");
  if (sub == "init") return Init(*args, json);
  if (sub == "mark") return Mark(*args, json);
  if (sub == "list") return List(*args, json);
  if (sub == "remove") return Remove(*args, json);
  if (sub == "resize") return Resize(*args, json);
  return Usage(kTrackerTool, "unknown subcommand '" + sub + "'");
}

// `strata checkpoint`. Kept as parse -> open -> [hooks] -> checkpoint ->
// print so a `--quiesce` option can wrap the Checkpoint call in a freeze
// window without restructuring (Tracker::Checkpoint is the library call).
int CheckpointMain(int argc, char** argv) {
  std::set<std::string> vf = kQuiesceValueFlags, bf = kQuiesceBoolFlags;
  vf.insert("--tracker");
  bf.insert({"--json", "--help"});
  auto args = Args::Parse(argc, argv, 1, vf, bf);
  if (!args) return Usage(kCheckpointTool, args.error().message());
  if (args->Has("--help")) {
    std::fputs(kCheckpointHelp, stdout);
    return kExitOk;
  }
  if (!args->Has("--tracker")) return Usage(kCheckpointTool, "--tracker DIR is required");
  const auto& pos = args->positional();
  if (pos.size() != 1) return Usage(kCheckpointTool, "expected one checkpoint NAME");
  if (Status n = Tracker::ValidCheckpointName(pos[0]); !n.ok()) return Usage(kCheckpointTool, n.message());
  auto fw = ParseFreezeWindow(*args);
  if (!fw) return Usage(kCheckpointTool, fw.error().message());
  // Never freeze the filesystem the tracker writes its state to: the
  // checkpoint inside the window would deadlock on it.
  fw->protected_paths.push_back(*args->Get("--tracker"));
  auto t = OpenFor(*args, false);
  if (!t) return Fail(kCheckpointTool, t.error(), true);
  PrintRecovery(kCheckpointTool, **t);
  Result<CheckpointInfo> cp = Status::InvalidArgument("no checkpoint taken");
  std::optional<quiesce::QuiescedResult> window;
  if (!fw->enabled) {
    cp = (*t)->Checkpoint(pos[0]);
  } else {
    auto q = RunInFreezeWindow(*fw, [&]() -> Status {
      cp = (*t)->Checkpoint(pos[0]);
      return cp.status();
    });
    if (!q) {
      (void)(*t)->Close();
      return Fail(kCheckpointTool, q.error());  // a refusal or a freeze failure: exit 1
    }
    window = *q;
  }
  // The window's verdict is known only now, after the thaw: record it with
  // the checkpoint (docs/formats/tracker-state.md §3.2, entry flag bit 1).
  Status v;
  if (cp && window) {
    v = (*t)->SetQuiesced(cp->name, window->quiesced);
    if (v.ok()) cp->quiesced = window->quiesced;
  }
  Status c = (*t)->Close();
  if (!cp) return Fail(kCheckpointTool, cp.error(), true);
  if (!v.ok()) {
    return Fail(kCheckpointTool, v.WithContext("checkpoint '" + cp->name + "' was taken but whether it was "
                                                "quiesced could not be recorded"));
  }
  if (!c.ok()) return Fail(kCheckpointTool, c);
  if (args->Has("--json")) {
    Json j = CheckpointJson(*cp);
    if (window) {
      j["frozen_ms"] = std::chrono::duration<double, std::milli>(window->frozen_for).count();
      j["exec_exit_code"] = window->exec_exit_code;
      j["frozen"] = window->mount_points;
    }
    PrintJson(j);
  } else {
    std::printf("checkpoint %s (id %" PRIu64 "): %s changed in the sealed generation\n",
                cp->name.c_str(), cp->id,
                cp->generation_unknown ? "unknown" : FormatBytes(cp->changed_bytes).c_str());
    if (window) {
      std::printf("%s: I/O frozen for %.1f ms on %zu filesystem%s\n",
                  window->quiesced ? "quiesced" : "NOT quiesced (the freeze window expired)",
                  std::chrono::duration<double, std::milli>(window->frozen_for).count(),
                  window->mount_points.size(), window->mount_points.size() == 1 ? "" : "s");
    }
  }
  return kExitOk;
}

Registrar tracker_reg("tracker", "dirty-block tracker: init, mark, list, remove, resize",
                      &TrackerMain);
Registrar checkpoint_reg("checkpoint", "seal the tracker's active generation as a checkpoint",
                         &CheckpointMain);

}  // namespace
}  // namespace strata::cli
