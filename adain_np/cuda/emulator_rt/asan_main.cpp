// Standalone driver for the AddressSanitizer mode of the CUDA emulator.
//
//   prog --signature     prints the kernel's parameter description
//   prog --run DIR       runs the launch described in DIR/request.txt
//
// request.txt (written by adain_np/cuda/emulator.py):
//   grid X Y Z / block X Y Z / shared BYTES
//   buffers N, then N lines "NBYTES WRITEBACK" (data in DIR/b<i>.bin)
//   args N, then N lines "P BUFFER" or "S NBYTES HEX"
// Every buffer is its own exactly sized heap allocation, so ASan catches a
// one-element overrun. DIR/buffers.txt maps buffers to addresses (for the
// Python side's report); writable buffers are written back to DIR/b<i>.bin;
// a launch error goes to DIR/error.txt (first line: the error code).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" const char* emu_signature(void);
extern "C" int emu_launch(const unsigned* grid, const unsigned* block,
                          unsigned long long shared_bytes, void** args);
extern "C" const char* emu_last_error(void);

namespace {

[[noreturn]] void die(const char* msg, const std::string& detail = "") {
  std::fprintf(stderr, "emulator driver: %s %s\n", msg, detail.c_str());
  std::exit(4);
}

std::string path_in(const std::string& dir, const std::string& name) { return dir + "/" + name; }

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--signature") == 0) {
    std::printf("%s\n", emu_signature());
    return 0;
  }
  if (argc != 3 || std::strcmp(argv[1], "--run") != 0) die("usage: --signature | --run DIR");
  const std::string dir = argv[2];
  FILE* req = std::fopen(path_in(dir, "request.txt").c_str(), "r");
  if (!req) die("cannot open", path_in(dir, "request.txt"));
  unsigned grid[3], block[3];
  unsigned long long shared = 0;
  size_t nbuf = 0, narg = 0;
  if (std::fscanf(req, " grid %u %u %u block %u %u %u shared %llu buffers %zu", &grid[0], &grid[1],
                  &grid[2], &block[0], &block[1], &block[2], &shared, &nbuf) != 8)
    die("bad request header");
  std::vector<void*> buffers(nbuf);
  std::vector<size_t> sizes(nbuf);
  std::vector<int> writeback(nbuf);
  FILE* map = std::fopen(path_in(dir, "buffers.txt").c_str(), "w");
  if (!map) die("cannot write buffers.txt");
  for (size_t i = 0; i < nbuf; ++i) {
    if (std::fscanf(req, " %zu %d", &sizes[i], &writeback[i]) != 2) die("bad buffer line");
    if (posix_memalign(&buffers[i], 256, sizes[i]) != 0) die("out of memory");
    std::string name = path_in(dir, "b" + std::to_string(i) + ".bin");
    FILE* in = std::fopen(name.c_str(), "rb");
    if (!in || std::fread(buffers[i], 1, sizes[i], in) != sizes[i]) die("cannot read", name);
    std::fclose(in);
    std::fprintf(map, "%zu %p %zu\n", i, buffers[i], sizes[i]);
  }
  std::fclose(map);
  if (std::fscanf(req, " args %zu", &narg) != 1) die("bad args line");
  std::vector<void*> pointer_slots(narg);
  std::vector<unsigned long long> scalar_slots(narg * 2);  // 16 bytes, aligned, per argument
  std::vector<void*> args(narg);
  for (size_t i = 0; i < narg; ++i) {
    char kind;
    if (std::fscanf(req, " %c", &kind) != 1) die("bad arg line");
    if (kind == 'P') {
      size_t b;
      if (std::fscanf(req, " %zu", &b) != 1 || b >= nbuf) die("bad pointer arg");
      pointer_slots[i] = buffers[b];
      args[i] = &pointer_slots[i];
    } else {
      size_t n;
      char hex[40];
      if (std::fscanf(req, " %zu %39s", &n, hex) != 2 || n > 16 || std::strlen(hex) != 2 * n)
        die("bad scalar arg");
      unsigned char* bytes = reinterpret_cast<unsigned char*>(&scalar_slots[2 * i]);
      for (size_t k = 0; k < n; ++k) {
        unsigned v;
        std::sscanf(hex + 2 * k, "%2x", &v);
        bytes[k] = (unsigned char)v;
      }
      args[i] = bytes;
    }
  }
  std::fclose(req);
  std::fflush(stdout);
  int rc = emu_launch(grid, block, shared, args.data());
  std::fflush(stdout);
  if (rc != 0) {
    FILE* err = std::fopen(path_in(dir, "error.txt").c_str(), "w");
    if (err) {
      std::fprintf(err, "%d\n%s", rc, emu_last_error());
      std::fclose(err);
    }
    return 3;
  }
  for (size_t i = 0; i < nbuf; ++i) {
    if (!writeback[i]) continue;
    std::string name = path_in(dir, "b" + std::to_string(i) + ".bin");
    FILE* out = std::fopen(name.c_str(), "wb");
    if (!out || std::fwrite(buffers[i], 1, sizes[i], out) != sizes[i]) die("cannot write", name);
    std::fclose(out);
  }
  for (void* b : buffers) std::free(b);
  return 0;
}
