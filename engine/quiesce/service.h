// The quiesce service: one Coordinator in a small daemon so that short-lived
// `strata freeze` / `strata thaw` / `strata status` processes share handles,
// counts and deadlines exactly as the library does in one process.
//
// State directory (default /run/strata/quiesce, or $STRATA_QUIESCE_DIR):
//   sock            unix socket the daemon listens on (mode 0600)
//   daemon.lock     flock held by the daemon for its whole life
//   spawn.lock      flock serialising "connect or spawn" among clients
//   journal-PID-N   freeze journal of a live or dead process (journal.h):
//                   written before every freeze, flocked by its owner
//   daemon.log      the daemon's stderr
// The daemon thaws on deadline expiry (watchdog), on SIGINT/SIGTERM, and
// exits once nothing is held. SIGKILL of the daemon (or of `strata freeze
// --exec`) leaves filesystems frozen and its journal on disk;
// ThawAllAndRecover() then thaws what every journal no live process holds
// names (RecoverJournals) and removes the journals it settled.
//
// Spawning forks without exec: call the client functions from a
// single-threaded process (the CLI). Programs linking strata should use a
// Coordinator directly.
#ifndef STRATA_ENGINE_QUIESCE_SERVICE_H_
#define STRATA_ENGINE_QUIESCE_SERVICE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "strata/quiesce.h"
#include "strata/status.h"

namespace strata::quiesce {

struct ServiceConfig {
  std::string state_dir;                     // DefaultStateDir() when empty
  std::string backend = "fifreeze";          // "fifreeze" or "qga"
  std::string qga_socket;                    // for backend "qga"
  std::vector<std::string> protected_paths;  // plus the state dir itself
};

// $STRATA_QUIESCE_DIR or /run/strata/quiesce.
std::string DefaultStateDir();

struct ServiceHandle {
  HandleId id = 0;
  bool expired = false;
  bool interrupted = false;  // see HandleStatus::interrupted
  std::string interruption;
  int64_t frozen_ms = 0;     // since freeze (or freeze to expiry)
  int64_t remaining_ms = 0;  // until the deadline; <= 0 once expired
  std::vector<std::string> mount_points;
};

struct ServiceStatus {
  bool running = false;
  int64_t pid = 0;
  std::string backend;
  std::vector<ServiceHandle> handles;
  std::map<std::string, int> counts;
  // Mount points that journals of dead processes (a SIGKILLed daemon or
  // --exec) name: frozen, or about to be, until `strata thaw --all`.
  std::vector<std::string> stale_frozen;
  // Damage in those journals ("<file>: byte N: <problem>"): what the damaged
  // part named may still be frozen.
  std::vector<std::string> damaged_journals;
};

// Creates the state directory (mode 0700) if needed.
Status PrepareStateDir(const std::string& dir);

// Freezes through the daemon (spawned if absent). Returns the handle id and
// the mount points it froze.
Result<std::pair<HandleId, std::vector<std::string>>> ServiceFreeze(const ServiceConfig& config,
                                                                    const FreezeRequest& request);
// kNotFound for an unknown/thawed handle or when no daemon runs.
Result<ThawReport> ServiceThaw(const std::string& state_dir, HandleId id);

struct ThawAllReport {
  std::vector<ThawReport> thawed;  // handles the daemon released
  // From the journals of dead processes (RecoverJournals):
  std::vector<std::string> recovered;   // were frozen, thawed now
  std::vector<std::string> not_frozen;  // journaled but not frozen
  std::vector<std::string> not_recovered;  // with the reason; journal kept
  std::vector<std::string> live;           // journals of processes still running
};
// Asks a live daemon to thaw every handle, then recovers the journals in
// `state_dir` that no live process holds.
Result<ThawAllReport> ThawAllAndRecover(const std::string& state_dir);

Result<ServiceStatus> GetServiceStatus(const std::string& state_dir);

}  // namespace strata::quiesce

#endif  // STRATA_ENGINE_QUIESCE_SERVICE_H_
