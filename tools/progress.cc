#include "tools/progress.h"

#include <unistd.h>

#include <cinttypes>
#include <cmath>
#include <cstdio>

#include "strata/units.h"

namespace strata::cli {

namespace {
std::mutex g_active_mu;
Progress* g_active = nullptr;
}  // namespace

void ClearActiveProgress() {
  std::lock_guard<std::mutex> l(g_active_mu);
  if (g_active) g_active->Clear();
}

Progress::~Progress() {
  {
    std::lock_guard<std::mutex> l(g_active_mu);
    if (g_active == this) g_active = nullptr;
  }
  Clear();
}

Result<OutputOptions> OutputOptions::From(const Args& a) {
  OutputOptions o;
  o.json = a.Has("--json");
  o.quiet = a.Has("--quiet");
  o.verbose = a.Has("--verbose");
  if (o.quiet && (a.Has("--progress") || o.verbose)) {
    return Status::InvalidArgument("--quiet goes with neither --progress nor --verbose");
  }
  if (a.Has("--progress")) o.progress = Progress::kOn;
  else if (o.quiet) o.progress = Progress::kOff;
  return o;
}

Progress::Progress(std::string what, const OutputOptions& o) : Progress(std::move(what), o, ::isatty(2) == 1) {}

Progress::Progress(std::string what, const OutputOptions& o, bool stderr_is_tty)
    : what_(std::move(what)), verbose_(o.verbose), quiet_(o.quiet), t0_(Clock::now()) {
  using P = OutputOptions::Progress;
  if (o.json) json_ = o.progress == P::kOn;  // JSON lines only when asked for
  else text_ = o.progress == P::kOn || (o.progress == P::kAuto && stderr_is_tty);
  std::lock_guard<std::mutex> l(g_active_mu);
  g_active = this;
}

void Progress::Phase(const std::string& phase) {
  std::lock_guard<std::mutex> l(mu_);
  phase_ = phase;
  t0_ = Clock::now();
  done_ = total_ = 0;
}

void Progress::Update(uint64_t done, uint64_t total) {
  if (!text_ && !json_) return;
  std::lock_guard<std::mutex> l(mu_);
  if (done < done_ && total == total_) return;  // out of order: keep the line monotonic
  done_ = done;
  total_ = total;
  auto now = Clock::now();
  bool final_update = total > 0 && done >= total;
  if (drawn_ && !final_update && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  Draw(final_update);
}

void Progress::Draw(bool final_update) {
  double secs = std::chrono::duration<double>(Clock::now() - t0_).count();
  double rate = secs > 0.001 ? static_cast<double>(done_) / secs : 0;
  double pct = total_ ? 100.0 * static_cast<double>(done_) / static_cast<double>(total_) : 0;
  double eta = rate > 0 && total_ > done_ ? static_cast<double>(total_ - done_) / rate : 0;
  if (json_) {
    Json j = {{"progress",
               {{"operation", what_},
                {"phase", phase_},
                {"done_bytes", done_},
                {"total_bytes", total_},
                {"percent", std::round(pct * 10) / 10},
                {"bytes_per_second", static_cast<uint64_t>(rate)},
                {"eta_seconds", std::round(eta * 10) / 10},
                {"final", final_update}}}};
    std::string line = j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
    std::fwrite(line.data(), 1, line.size(), stderr);
    drawn_ = true;
    return;
  }
  constexpr int kWidth = 20;
  int filled = total_ ? static_cast<int>(pct / 100.0 * kWidth) : 0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::string label = phase_.empty() ? what_ : what_ + " (" + phase_ + ")";
  std::fprintf(stderr, "\r\033[K%s %3.0f%% [%s] %s / %s  %s/s  ETA %s", label.c_str(), pct, bar.c_str(),
               FormatBytes(done_).c_str(), FormatBytes(total_).c_str(),
               FormatBytes(static_cast<uint64_t>(rate)).c_str(),
               rate > 0 ? (std::to_string(static_cast<uint64_t>(std::ceil(eta))) + " s").c_str() : "-");
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::Clear() {
  std::lock_guard<std::mutex> l(mu_);
  ClearLocked();
}

void Progress::ClearLocked() {
  if (text_ && drawn_) {
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
  }
  drawn_ = false;
}

void Progress::Detail(const std::string& text) {
  if (!verbose_) return;
  std::lock_guard<std::mutex> l(mu_);
  bool redraw = text_ && drawn_;
  ClearLocked();
  std::fprintf(stderr, "%s\n", text.c_str());
  if (redraw) Draw(false);
}

void Progress::Note(const std::string& tool, const std::string& text) {
  if (quiet_) return;
  std::lock_guard<std::mutex> l(mu_);
  bool redraw = text_ && drawn_;
  ClearLocked();
  std::fprintf(stderr, "%s: note: %s\n", tool.c_str(), text.c_str());
  if (redraw) Draw(false);
}

}  // namespace strata::cli
