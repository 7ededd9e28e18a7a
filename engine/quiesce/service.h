// The quiesce service: one Coordinator in a small daemon so that short-lived
// `strata freeze` / `strata thaw` / `strata status` processes share handles,
// counts and deadlines exactly as the library does in one process.
//
// State directory (default /run/strata/quiesce, or $STRATA_QUIESCE_DIR):
//   sock         unix socket the daemon listens on (mode 0600)
//   daemon.lock  flock held by the daemon for its whole life
//   spawn.lock   flock serialising "connect or spawn" among clients
//   frozen       what is frozen right now, rewritten atomically on every
//                change: "pid N" then one line per filesystem
//                "<count>\t<mount point>\t<backend>"
//   daemon.log   the daemon's stderr
// The daemon thaws on deadline expiry (watchdog), on SIGINT/SIGTERM, and
// exits once nothing is held. SIGKILL of the daemon leaves filesystems
// frozen and `frozen` on disk; ThawAllAndRecover() then FITHAWs every mount
// point listed there (only when daemon.lock shows no daemon) and removes it.
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

#include "engine/quiesce/quiesce.h"
#include "extents/status.h"

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
  // Mount points the `frozen` file lists while no daemon runs (after a
  // SIGKILL): still frozen until `strata thaw --all`.
  std::vector<std::string> stale_frozen;
};

// Freezes through the daemon (spawned if absent). Returns the handle id and
// the mount points it froze.
Result<std::pair<HandleId, std::vector<std::string>>> ServiceFreeze(const ServiceConfig& config,
                                                                    const FreezeRequest& request);
// kNotFound for an unknown/thawed handle or when no daemon runs.
Result<ThawReport> ServiceThaw(const std::string& state_dir, HandleId id);

struct ThawAllReport {
  std::vector<ThawReport> thawed;      // handles the daemon released
  std::vector<std::string> recovered;  // stale mounts FITHAWed after a crash
  // Stale entries of another backend (qga: frozen inside a guest), left in
  // the state file: thaw them with guest-fsfreeze-thaw.
  std::vector<std::string> not_recovered;
};
Result<ThawAllReport> ThawAllAndRecover(const std::string& state_dir);

Result<ServiceStatus> GetServiceStatus(const std::string& state_dir);

}  // namespace strata::quiesce

#endif  // STRATA_ENGINE_QUIESCE_SERVICE_H_
