// Restores into a qcow2 image or a writable NBD export (live.h).
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "engine/live/live_internal.h"
#include "engine/quiesce/process.h"

extern char** environ;

namespace strata::live {

namespace {

using Clock = std::chrono::steady_clock;

std::vector<const ArchiveReader*> Raw(const std::vector<std::unique_ptr<ArchiveReader>>& v) {
  std::vector<const ArchiveReader*> r;
  for (auto& p : v) r.push_back(p.get());
  return r;
}

std::string OnPath(const std::string& tool) {
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  for (size_t at = 0; at <= p.size();) {
    size_t colon = p.find(':', at);
    if (colon == std::string::npos) colon = p.size();
    std::string cand = p.substr(at, colon - at) + "/" + tool;
    if (::access(cand.c_str(), X_OK) == 0) return cand;
    at = colon + 1;
  }
  return "/usr/bin/" + tool;
}

// Writes the resolved view of `chain` into `out`; zero ranges only when
// `write_zeros` (a fresh image already reads zeros there).
Result<RestoreStats> WriteView(const std::vector<std::unique_ptr<ArchiveReader>>& chain, NbdImage& out,
                               bool write_zeros) {
  auto t0 = Clock::now();
  RestoreStats st;
  st.chain_length = chain.size();
  STRATA_RETURN_IF_ERROR(ForEachResolved(Raw(chain), [&](uint64_t off, std::span<const uint8_t> d,
                                                         uint64_t zero_len) -> Status {
    if (d.empty()) {
      st.zero_bytes += zero_len;
      return write_zeros ? out.WriteZeros(off, zero_len) : Status::Ok();
    }
    st.data_bytes += d.size();
    return out.Write(off, d);
  }));
  STRATA_RETURN_IF_ERROR(out.Flush());
  st.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return st;
}

}  // namespace

Result<RestoreStats> RestoreToNbd(Repository& repo, const std::string& which, const std::string& uri,
                                  const PipelineOptions& opt) {
  (void)opt;
  STRATA_ASSIGN_OR_RETURN(const CatalogEntry* e, repo.Find(which));
  STRATA_ASSIGN_OR_RETURN(auto chain, repo.OpenChain(e->id()));
  STRATA_RETURN_IF_ERROR(CheckChain(Raw(chain)));
  NbdOptions no;
  no.writable = true;
  STRATA_ASSIGN_OR_RETURN(auto out, NbdImage::Open(uri, no));
  if (out->size() < chain[0]->header().disk_size) {
    return Status::InvalidArgument(uri + ": export has " + std::to_string(out->size()) + " bytes, the backup " +
                                   std::to_string(chain[0]->header().disk_size));
  }
  return WriteView(chain, *out, true);
}

Result<RestoreStats> RestoreToQcow2(Repository& repo, const std::string& which, const std::string& output,
                                    const PipelineOptions& opt) {
  (void)opt;
  STRATA_ASSIGN_OR_RETURN(const CatalogEntry* e, repo.Find(which));
  STRATA_ASSIGN_OR_RETURN(auto chain, repo.OpenChain(e->id()));
  STRATA_RETURN_IF_ERROR(CheckChain(Raw(chain)));
  const uint64_t size = chain[0]->header().disk_size;
  auto fail = [&](Status s) -> Status {
    (void)::unlink(output.c_str());
    return s;
  };
  auto rc = quiesce::internal::RunProcess({OnPath("qemu-img"), "create", "-q", "-f", "qcow2", output, std::to_string(size)},
                                          std::chrono::seconds(60));
  if (!rc) return fail(rc.error().WithContext("qemu-img create " + output));
  if (*rc != 0) return fail(Status(StatusCode::kIoError, "qemu-img create " + output + " exited with " + std::to_string(*rc)));
  // qemu-nbd serves the new image to one client and exits when it leaves,
  // closing the qcow2 cleanly.
  char tmpl[] = "/tmp/strata-restore-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return fail(Status::FromErrno(errno, "mkdtemp"));
  const std::string dir = tmpl, sock = dir + "/nbd.sock";
  const std::string qemu_nbd = OnPath("qemu-nbd");
  std::vector<std::string> args = {qemu_nbd, "-f", "qcow2", "-k", sock, "--cache=writeback", "--discard=unmap", output};
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (int err = ::posix_spawn(&pid, qemu_nbd.c_str(), nullptr, nullptr, argv.data(), environ); err != 0) {
    ::rmdir(tmpl);
    return fail(Status::FromErrno(err, "starting " + qemu_nbd));
  }
  auto reap = [&](bool kill) -> int {
    if (kill) ::kill(pid, SIGTERM);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    (void)::unlink(sock.c_str());
    ::rmdir(dir.c_str());
    return status;
  };
  Result<std::unique_ptr<NbdImage>> out = Status::NotFound("not connected");
  NbdOptions no;
  no.writable = true;
  for (auto end = Clock::now() + std::chrono::seconds(20); Clock::now() < end;) {
    struct stat s;
    if (::stat(sock.c_str(), &s) == 0) {
      out = NbdImage::Open("nbd+unix:///?socket=" + sock, no);
      if (out) break;
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      pid = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!out) {
    if (pid > 0) reap(true);
    return fail(out.error().WithContext("qemu-nbd on " + output));
  }
  auto st = WriteView(chain, **out, false);
  out->reset();  // disconnect: qemu-nbd closes the image and exits
  int status = reap(!st.has_value());
  if (!st) return fail(st.error());
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return fail(Status(StatusCode::kIoError, "qemu-nbd serving " + output + " failed (status " + std::to_string(status) + ")"));
  }
  return st;
}

}  // namespace strata::live
