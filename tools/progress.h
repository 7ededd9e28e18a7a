// One progress reporter for every long command (backup, restore, verify,
// merge, generate, live backups). On a terminal it redraws one line on
// stderr (percent, bytes, rate, ETA) and erases it before the result is
// printed; --progress forces it, -q/--quiet silences it, and with --json
// --progress it writes JSON lines on stderr instead (docs/cli-json.md).
#ifndef STRATA_TOOLS_PROGRESS_H_
#define STRATA_TOOLS_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "tools/cli_util.h"

namespace strata::cli {

// The flags every long command takes.
inline const std::set<std::string> kProgressFlags = {"--progress", "--quiet", "--verbose"};

struct OutputOptions {
  enum class Progress { kAuto, kOn, kOff };
  Progress progress = Progress::kAuto;
  bool json = false;     // --json: the result (and progress, if forced) as JSON
  bool verbose = false;  // -v: details (phases, each archive) on stderr
  bool quiet = false;    // -q: no progress, no notes
  // Reads --progress, -q/--quiet, -v/--verbose, --json; a usage error for
  // --quiet with --progress or --verbose.
  static Result<OutputOptions> From(const Args& a);
};

class Progress {
 public:
  // `what` names the operation ("backup", "verify", ...). `to_tty` is
  // whether stderr is a terminal (tests pass it).
  Progress(std::string what, const OutputOptions& o);
  Progress(std::string what, const OutputOptions& o, bool stderr_is_tty);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Reports `done` of `total` bytes; redraws at most every 100 ms (and at
  // the end). A new phase ("phase" in JSON) restarts the rate and ETA.
  void Update(uint64_t done, uint64_t total);
  void Phase(const std::string& phase);
  // Erases the line: call before printing the result (the destructor does
  // it too).
  void Clear();
  // A detail line on stderr, shown with -v only (the line is redrawn after).
  void Detail(const std::string& text);
  // A note on stderr ("<tool>: note: ..."), silenced by -q.
  void Note(const std::string& tool, const std::string& text);

  bool text() const { return text_; }
  bool json() const { return json_; }

 private:
  using Clock = std::chrono::steady_clock;
  void Draw(bool final_update);
  void ClearLocked();
  std::mutex mu_;  // the pipeline reports from its threads
  std::string what_, phase_;
  bool text_ = false, json_ = false, verbose_ = false, quiet_ = false, drawn_ = false;
  uint64_t done_ = 0, total_ = 0;
  Clock::time_point t0_, last_;
};

// Erases the line of the Progress that is drawing, if any (Fail() and
// Usage() call it before printing an error).
void ClearActiveProgress();

}  // namespace strata::cli

#endif  // STRATA_TOOLS_PROGRESS_H_
