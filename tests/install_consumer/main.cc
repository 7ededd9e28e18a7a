// Backs up a sample image into a new repository and restores it, through
// the installed C++ headers and libstrata.so. Usage: consumer WORKDIR
#include <strata/jobs.h>
#include <strata/repository.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

static std::vector<char> Read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1], disk = dir + "/disk.raw", repo = dir + "/repo", out = dir + "/out.raw";
  {
    std::ofstream f(disk, std::ios::binary);
    std::string block(65536, 'x');
    for (int i = 0; i < 64; ++i) {
      block[0] = static_cast<char>(i);
      f.write(block.data(), static_cast<std::streamsize>(i % 3 ? block.size() : 0));
      if (i % 3 == 0) f.seekp(65536, std::ios::cur);
    }
  }
  if (strata::Status s = strata::Repository::Init(repo); !s.ok()) {
    std::fprintf(stderr, "init: %s\n", s.message().c_str());
    return 1;
  }
  auto r = strata::Repository::Open(repo);
  if (!r) {
    std::fprintf(stderr, "open: %s\n", r.error().message().c_str());
    return 1;
  }
  strata::BackupRequest req;
  req.image = disk;
  req.source.kind = strata::SourceKind::kFull;
  auto b = strata::BackupToRepository(**r, req);
  if (!b) {
    std::fprintf(stderr, "backup: %s\n", b.error().message().c_str());
    return 1;
  }
  auto st = strata::RestoreFromRepository(**r, "latest", out, {});
  if (!st) {
    std::fprintf(stderr, "restore: %s\n", st.error().message().c_str());
    return 1;
  }
  if (Read(out) != Read(disk)) {
    std::fprintf(stderr, "restore differs from the disk\n");
    return 1;
  }
  std::printf("C++ consumer: backup %s restored byte-identically\n", strata::IdToHex(b->entry.id()).c_str());
  return 0;
}
