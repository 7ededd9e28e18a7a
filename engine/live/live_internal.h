// Internal helpers shared by the live backup paths (engine/live).
#ifndef STRATA_ENGINE_LIVE_LIVE_INTERNAL_H_
#define STRATA_ENGINE_LIVE_LIVE_INTERNAL_H_

#include <memory>
#include <string>

#include "engine/live/live.h"
#include "strata/env.h"
#include "formats/nbd/nbd_image.h"

namespace strata::live::internal {

// Creates the state directory (0700) if needed.
Status PrepareStateDir(const std::string& dir);
// An exclusive lock on STATE/NAME.lock, waiting up to 30 s for another run.
Result<std::unique_ptr<FileLock>> LockState(const std::string& dir, const std::string& name);
// 16 hex digits of XXH3-64(text): short, stable names for sockets and nodes.
std::string ShortHash(const std::string& text);
// Absolute, symlink-free form of a path when it exists.
std::string RealPath(const std::string& path);

// The point of strata's checkpoint number `seq` of chain `series`:
// "strata-<series hex>-<seq>".
ChainPoint SeriesPoint(PointKind kind, const Id128& series, uint64_t seq);
// Whether `name` is a checkpoint name strata made for `series`.
bool IsSeriesName(const std::string& name, const Id128& series);
bool IsStrataName(const std::string& name);

// The newest backup of disk `disk_name` that ends at a point of `kind`
// (null if none, or if the disk is unknown).
const CatalogEntry* NewestEndingAt(const Repository& repo, const std::string& disk_name, PointKind kind);

// Hands an opened export to the backup job: mode "full" (allocated extents),
// "incremental" (`changes`) or "scan" (everything, stored where it differs
// from the parent).
Result<BackupResult> BackupImage(Repository& repo, Image& image, const std::string& disk_name,
                                 const std::string& mode, const ExtentSet* changes, const ChainPoint& start,
                                 const ChainPoint& end, const LiveOptions& opt);

// Calls opt.on_step when set.
void Step(const LiveOptions& opt, const char* name);

}  // namespace strata::live::internal

#endif  // STRATA_ENGINE_LIVE_LIVE_INTERNAL_H_
