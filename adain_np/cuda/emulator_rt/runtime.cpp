// Fiber scheduler of the CUDA emulator (see adain_np/cuda/emulator.py for the model).
//
// Every CUDA thread of a block is a fiber with its own stack. Blocks run one
// after another on the calling OS thread. The scheduler runs each runnable
// fiber until it blocks at __syncthreads, at a warp collective or exits;
// when no fiber can run and no barrier can be released, the block deadlocked.
#include "cuda_emu.h"

#include <sys/mman.h>
#include <unistd.h>
#include <cstdarg>
#include <cstdlib>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

// Linker-provided bounds of all `__shared__` variables (section emu_shared).
extern "C" {
extern unsigned char __start_emu_shared[] __attribute__((weak, visibility("hidden")));
extern unsigned char __stop_emu_shared[] __attribute__((weak, visibility("hidden")));
}

// void emu_ctx_switch(void** save_sp, void* new_sp): saves the callee-saved
// registers, MXCSR and the x87 control word on the current stack, stores the
// stack pointer in *save_sp and resumes the context saved at new_sp.
asm(R"(
.pushsection .text
.p2align 4
.globl emu_ctx_switch
.hidden emu_ctx_switch
.type emu_ctx_switch, @function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_ctx_switch, .-emu_ctx_switch
.popsection
)");
extern "C" void emu_ctx_switch(void** save_sp, void* new_sp);

namespace emu {

const ThreadPublic* g_cur;
uint3 g_block_idx, g_block_dim, g_grid_dim;
constexpr size_t kDynSmemMax = 232448;  // 227 KiB: the sm_90 per-block limit
alignas(256) unsigned char dyn_smem[kDynSmemMax];
// Schedule fuzzing (emu_set_schedule, used by RawKernel.check_race): the order in which
// run_block resumes the runnable fibers in each sweep, and the order the blocks run in.
// 0: thread and block index order; 1: both reversed; 2: seeded random (a fresh fiber
// permutation every sweep, a random affine permutation of the blocks).
unsigned g_schedule_mode = 0;
unsigned long long g_schedule_state = 1;

namespace {

#ifdef EMU_ASAN
constexpr size_t kStackBytes = 512 * 1024;  // ASan frames and reports are large
#else
constexpr size_t kStackBytes = 64 * 1024;
#endif
constexpr int kMaxThreads = 1024;
constexpr unsigned char kPoison = 0xFF;  // NaN as float, -1 as int

enum State { kRunnable, kAtBarrier, kAtWarp, kExited };
enum ErrorCode { kOk = 0, kBadLaunch = 1, kDeadlock = 2, kDeviceFault = 3 };

struct Fiber : ThreadPublic {
  void* sp;
  unsigned char* stack_lo;
  unsigned linear;
  State state;
  const char* file;  // call site of the barrier / collective it waits at
  int line;
  int kind;
  unsigned mask;
  uint64_t value;
  int size, arg, width;
  uint64_t result;
  void* asan_fake_stack;
};

Fiber g_fibers[kMaxThreads];
unsigned g_nthreads;
unsigned g_exited, g_at_barrier;
unsigned g_bar_count, g_bar_result_count, g_bar_result_participants;
void (*g_body)(void*);
void* g_body_args;
void* g_sched_sp;
void* g_dead_sp;  // where a finished fiber's context goes
void* g_sched_fake_stack;
const void* g_sched_stack_bottom;
size_t g_sched_stack_size;
unsigned char* g_stacks;  // g_stack_count stacks of (guard page + kStackBytes)
size_t g_stack_count, g_page;
int g_failed;
const char* g_kernel_name = "";
char g_error[8192];

void set_error(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(g_error, sizeof g_error, fmt, ap);
  va_end(ap);
}
void append_error(const char* fmt, ...) {
  size_t n = std::strlen(g_error);
  if (n + 1 >= sizeof g_error) return;
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(g_error + n, sizeof g_error - n, fmt, ap);
  va_end(ap);
}

inline void asan_start_switch(void** fake_save, const void* bottom, size_t size) {
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(fake_save, bottom, size);
#else
  (void)fake_save; (void)bottom; (void)size;
#endif
}
inline void asan_finish_switch(void* fake, const void** bottom_old, size_t* size_old) {
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, bottom_old, size_old);
#else
  (void)fake; (void)bottom_old; (void)size_old;
#endif
}

// Writes the poison pattern without ASan checks: under ASan the shared
// section also holds the redzones between `__shared__` arrays.
__attribute__((no_sanitize_address)) void poison(unsigned char* p, size_t n) {
#ifdef EMU_ASAN
  volatile unsigned char* v = p;
  for (size_t i = 0; i < n; ++i) v[i] = kPoison;
#else
  std::memset(p, kPoison, n);
#endif
}

Fiber* current() { return const_cast<Fiber*>(static_cast<const Fiber*>(g_cur)); }

bool ensure_stacks(size_t count) {
  if (count <= g_stack_count) return true;
  if (!g_page) g_page = (size_t)sysconf(_SC_PAGESIZE);
  if (g_stacks) munmap(g_stacks, g_stack_count * (g_page + kStackBytes));
  size_t total = count * (g_page + kStackBytes);
  void* m = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) { g_stacks = nullptr; g_stack_count = 0; return false; }
  g_stacks = static_cast<unsigned char*>(m);
  g_stack_count = count;
  for (size_t i = 0; i < count; ++i)  // a stack overflow faults instead of corrupting
    mprotect(g_stacks + i * (g_page + kStackBytes), g_page, PROT_NONE);
  return true;
}

void switch_to_scheduler(Fiber* f) {
  asan_start_switch(&f->asan_fake_stack, g_sched_stack_bottom, g_sched_stack_size);
  emu_ctx_switch(&f->sp, g_sched_sp);
  asan_finish_switch(f->asan_fake_stack, nullptr, nullptr);
}

[[noreturn]] void leave_to_scheduler() {
  // This fiber is done; with detect_stack_use_after_return its fake stack is
  // freed here, so nothing after this line may live on it.
  asan_start_switch(nullptr, g_sched_stack_bottom, g_sched_stack_size);
  emu_ctx_switch(&g_dead_sp, g_sched_sp);
  __builtin_unreachable();
}

[[noreturn]] void fiber_entry() {
  asan_finish_switch(nullptr, &g_sched_stack_bottom, &g_sched_stack_size);
  g_body(g_body_args);
  current()->state = kExited;
  ++g_exited;
  leave_to_scheduler();
}

void resume(Fiber& f) {
  g_cur = &f;
  asan_start_switch(&g_sched_fake_stack, f.stack_lo, kStackBytes);
  emu_ctx_switch(&g_sched_sp, f.sp);
  asan_finish_switch(g_sched_fake_stack, nullptr, nullptr);
}

void start_fiber(Fiber& f, unsigned linear) {
  f.linear = linear;
  f.thread_idx = uint3{linear % g_block_dim.x, (linear / g_block_dim.x) % g_block_dim.y,
                       linear / (g_block_dim.x * g_block_dim.y)};
  f.state = kRunnable;
  f.asan_fake_stack = nullptr;
  f.stack_lo = g_stacks + linear * (g_page + kStackBytes) + g_page;
#ifdef EMU_ASAN
  __asan_unpoison_memory_region(f.stack_lo, kStackBytes);  // stale frames of the last block
#endif
  // Initial frame as emu_ctx_switch expects it; `ret` enters fiber_entry with
  // the stack aligned as after a call, and a null return address ends backtraces.
  void** top = reinterpret_cast<void**>(f.stack_lo + kStackBytes);
  top[-1] = nullptr;
  top[-2] = reinterpret_cast<void*>(&fiber_entry);
  for (int i = 3; i <= 8; ++i) top[-i] = nullptr;  // rbp rbx r12 r13 r14 r15
  uint32_t fp_state[2] = {__builtin_ia32_stmxcsr(), 0};
  uint16_t cw;
  asm volatile("fnstcw %0" : "=m"(cw));
  fp_state[1] = cw;
  std::memcpy(&top[-9], fp_state, 8);
  f.sp = &top[-9];
}

const char* kind_name(int kind) {
  static const char* const names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                      "__shfl_xor_sync", "__syncwarp", "__ballot_sync",
                                      "__any_sync", "__all_sync", "__reduce_add_sync",
                                      "__reduce_min_sync", "__reduce_max_sync",
                                      "__reduce_min_sync", "__reduce_max_sync"};
  return kind >= 0 && kind < (int)(sizeof names / sizeof *names) ? names[kind] : "?";
}

void describe_wait(const Fiber& f, char* out, size_t cap) {
  switch (f.state) {
    case kExited: std::snprintf(out, cap, "exited"); break;
    case kRunnable: std::snprintf(out, cap, "runnable"); break;
    case kAtBarrier: std::snprintf(out, cap, "wait at __syncthreads (%s:%d)", f.file, f.line); break;
    case kAtWarp:
      std::snprintf(out, cap, "wait at %s (%s:%d, mask 0x%08x)", kind_name(f.kind), f.file, f.line, f.mask);
      break;
  }
}

// Appends "threads a-b: <what>; ..." for fibers [begin, end), merging runs of
// threads that wait at the same place.
void append_thread_states(unsigned begin, unsigned end) {
  constexpr unsigned kMaxRuns = 16;
  char prev[256] = "", now[256];
  unsigned run_start = begin, runs = 0;
  for (unsigned i = begin; i <= end; ++i) {
    if (i < end) describe_wait(g_fibers[i], now, sizeof now);
    if (i == end || std::strcmp(now, prev) != 0) {
      if (i > begin && runs++ < kMaxRuns) {
        if (run_start == i - 1) append_error("\n  thread %u: %s", run_start, prev);
        else append_error("\n  threads %u-%u: %s", run_start, i - 1, prev);
      }
      run_start = i;
      std::memcpy(prev, now, sizeof prev);
    }
  }
  if (runs > kMaxRuns) append_error("\n  ... and %u more groups of threads", runs - kMaxRuns);
}

void block_header(const char* what) {
  set_error("kernel '%s' %s in block (%u,%u,%u) (threads are numbered x + y*blockDim.x + "
            "z*blockDim.x*blockDim.y; warp = thread/32):",
            g_kernel_name, what, g_block_idx.x, g_block_idx.y, g_block_idx.z);
}

[[noreturn]] void fail_in_fiber(int code) {
  g_failed = code;
  leave_to_scheduler();
}

// Called when every lane of f's mask waits at a collective: checks they all
// wait at the same one, then computes each lane's result and wakes them.
void complete_collective(Fiber* f, unsigned base, unsigned group) {
  for (unsigned lane = 0; lane < 32; ++lane) {
    if (!(group >> lane & 1)) continue;
    const Fiber& g = g_fibers[base + lane];
    bool same_site = g.line == f->line && std::strcmp(g.file, f->file) == 0;
    if (g.kind != f->kind || g.mask != f->mask || (f->kind != kSyncWarp && !same_site)) {
      block_header("has a divergent warp collective");
      append_error("\n  the lanes of a mask must all reach the same collective call with the same mask");
      append_thread_states(base, base + 32 < g_nthreads ? base + 32 : g_nthreads);
      fail_in_fiber(kDeadlock);
    }
  }
  const int w = f->width;
  const uint64_t size_mask = f->size >= 8 ? ~0ull : (1ull << (8 * f->size)) - 1;
  unsigned ballot = 0;
  uint64_t reduced = 0;
  bool first = true;
  for (unsigned lane = 0; lane < 32; ++lane) {
    if (!(group >> lane & 1)) continue;
    const Fiber& g = g_fibers[base + lane];
    if (g.value) ballot |= 1u << lane;
    uint32_t v = (uint32_t)g.value, r = (uint32_t)reduced;
    switch (f->kind) {
      case kReduceAdd: r += v; break;
      case kReduceMin: r = first || (int32_t)v < (int32_t)r ? v : r; break;
      case kReduceMax: r = first || (int32_t)v > (int32_t)r ? v : r; break;
      case kReduceMinU: r = first || v < r ? v : r; break;
      case kReduceMaxU: r = first || v > r ? v : r; break;
    }
    reduced = r;
    first = false;
  }
  for (unsigned lane = 0; lane < 32; ++lane) {
    if (!(group >> lane & 1)) continue;
    Fiber& g = g_fibers[base + lane];
    unsigned seg = lane & ~(unsigned)(w - 1), src = lane;
    unsigned pos = lane & (unsigned)(w - 1), a = (unsigned)g.arg;
    switch (f->kind) {
      case kShflIdx: src = seg + (a & (unsigned)(w - 1)); break;
      case kShflUp: src = pos >= a ? lane - a : lane; break;
      case kShflDown: src = pos + a < (unsigned)w ? lane + a : lane; break;
      case kShflXor: src = (lane ^ a) < seg + (unsigned)w ? lane ^ a : lane; break;
    }
    switch (f->kind) {
      case kShflIdx: case kShflUp: case kShflDown: case kShflXor:
        // A source lane outside the group gives an undefined value on the GPU.
        g.result = (group >> src & 1) ? g_fibers[base + src].value & size_mask : ~0ull & size_mask;
        break;
      case kBallot: g.result = ballot; break;
      case kAny: g.result = ballot != 0; break;
      case kAll: g.result = ballot == group; break;
      case kSyncWarp: g.result = 0; break;
      default: g.result = reduced; break;
    }
    g.state = kRunnable;
  }
}

void release_barrier() {
  g_bar_result_count = g_bar_count;
  g_bar_result_participants = g_at_barrier;
  for (unsigned i = 0; i < g_nthreads; ++i)
    if (g_fibers[i].state == kAtBarrier) g_fibers[i].state = kRunnable;
  g_at_barrier = 0;
  g_bar_count = 0;
}

unsigned long long next_random() {  // xorshift64*
  unsigned long long x = g_schedule_state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  g_schedule_state = x;
  return x * 2685821657736338717ull;
}

std::vector<unsigned> g_sweep_order;

void fill_sweep_order(unsigned n) {
  g_sweep_order.resize(n);
  for (unsigned i = 0; i < n; ++i) g_sweep_order[i] = g_schedule_mode == 1 ? n - 1 - i : i;
  if (g_schedule_mode == 2)
    for (unsigned i = n; i > 1; --i) std::swap(g_sweep_order[i - 1], g_sweep_order[next_random() % i]);
}

unsigned long long gcd(unsigned long long a, unsigned long long b) {
  while (b) { unsigned long long t = a % b; a = b; b = t; }
  return a;
}

int run_block() {
  for (unsigned i = 0; i < g_nthreads; ++i) start_fiber(g_fibers[i], i);
  g_exited = g_at_barrier = g_bar_count = 0;
  while (g_exited < g_nthreads) {
    bool ran = false;
    fill_sweep_order(g_nthreads);
    for (unsigned k = 0; k < g_nthreads; ++k) {
      const unsigned i = g_sweep_order[k];
      if (g_fibers[i].state != kRunnable) continue;
      ran = true;
      resume(g_fibers[i]);
      if (g_failed) return g_failed;
      if (g_at_barrier && g_at_barrier + g_exited == g_nthreads) release_barrier();
    }
    if (!ran) {
      block_header("deadlocked");
      append_error("\n  a __syncthreads needs every non-exited thread of the block; a warp collective "
                   "needs every lane of its mask at the same call");
      append_thread_states(0, g_nthreads);
      return kDeadlock;
    }
  }
  return kOk;
}

}  // namespace

uint64_t warp_collective(int kind, const char* file, int line, unsigned mask, uint64_t value,
                         int size, int arg, int width) {
  Fiber* f = current();
  unsigned lane = f->linear & 31, base = f->linear & ~31u;
  if (!(mask >> lane & 1)) {
    block_header("misused a warp collective");
    append_error("\n  thread %u calls %s (%s:%d) with mask 0x%08x, which excludes its own lane %u",
                 f->linear, kind_name(kind), file, line, mask, lane);
    fail_in_fiber(kDeviceFault);
  }
  if (width < 1 || width > 32 || (width & (width - 1))) {
    block_header("misused a warp collective");
    append_error("\n  thread %u calls %s (%s:%d) with width %d; it must be a power of 2 <= 32",
                 f->linear, kind_name(kind), file, line, width);
    fail_in_fiber(kDeviceFault);
  }
  f->state = kAtWarp;
  f->kind = kind;
  f->file = file;
  f->line = line;
  f->mask = mask;
  f->value = value;
  f->size = size;
  f->arg = arg;
  f->width = width;
  unsigned lanes_present = g_nthreads - base >= 32 ? ~0u : (1u << (g_nthreads - base)) - 1;
  unsigned group = mask & lanes_present;
  bool all_arrived = true;
  for (unsigned l = 0; l < 32 && all_arrived; ++l)
    if ((group >> l & 1) && g_fibers[base + l].state != kAtWarp) all_arrived = false;
  if (all_arrived) complete_collective(f, base, group);  // the last lane continues directly
  else switch_to_scheduler(f);
  return f->result;
}

int syncthreads(const char* file, int line, int predicate, int mode) {
  Fiber* f = current();
  f->state = kAtBarrier;
  f->file = file;
  f->line = line;
  ++g_at_barrier;
  g_bar_count += predicate ? 1 : 0;
  switch_to_scheduler(f);
  switch (mode) {
    case 1: return (int)g_bar_result_count;
    case 2: return g_bar_result_count == g_bar_result_participants;
    case 3: return g_bar_result_count != 0;
    default: return 0;
  }
}

unsigned activemask() {
  unsigned base = current()->linear & ~31u, m = 0;
  for (unsigned l = 0; l < 32 && base + l < g_nthreads; ++l)
    if (g_fibers[base + l].state != kExited) m |= 1u << l;
  return m;
}

void device_fail(const char* what, const char* file, int line) {
  Fiber* f = current();
  set_error("kernel '%s': %s at %s:%d in block (%u,%u,%u), thread (%u,%u,%u)", g_kernel_name, what,
            file, line, g_block_idx.x, g_block_idx.y, g_block_idx.z, f->thread_idx.x,
            f->thread_idx.y, f->thread_idx.z);
  fail_in_fiber(kDeviceFault);
}

int launch(const char* name, const unsigned* grid, const unsigned* block,
           unsigned long long shared_bytes, void (*body)(void*), void* args) {
  g_kernel_name = name;
  g_error[0] = 0;
  g_failed = 0;
  unsigned long long nthreads = (unsigned long long)block[0] * block[1] * block[2];
  if (nthreads < 1 || nthreads > kMaxThreads || grid[0] < 1 || grid[1] < 1 || grid[2] < 1) {
    set_error("kernel '%s': invalid launch configuration grid (%u,%u,%u) block (%u,%u,%u)", name,
              grid[0], grid[1], grid[2], block[0], block[1], block[2]);
    return kBadLaunch;
  }
  if (shared_bytes > kDynSmemMax) {
    set_error("kernel '%s': %llu bytes of dynamic shared memory exceed the %zu-byte limit", name,
              shared_bytes, kDynSmemMax);
    return kBadLaunch;
  }
  if (!ensure_stacks(nthreads)) {
    set_error("kernel '%s': cannot allocate %llu fiber stacks", name, nthreads);
    return kBadLaunch;
  }
  g_nthreads = (unsigned)nthreads;
  g_block_dim = uint3{block[0], block[1], block[2]};
  g_grid_dim = uint3{grid[0], grid[1], grid[2]};
  g_body = body;
  g_body_args = args;
  unsigned char* static_lo = __start_emu_shared;
  size_t static_bytes = static_lo ? (size_t)(__stop_emu_shared - static_lo) : 0;
#ifdef EMU_ASAN
  __asan_unpoison_memory_region(dyn_smem, kDynSmemMax);
  __asan_poison_memory_region(dyn_smem + shared_bytes, kDynSmemMax - shared_bytes);
#endif
  int rc = kOk;
  const unsigned long long nblocks = (unsigned long long)grid[0] * grid[1] * grid[2];
  unsigned long long stride = 1, offset = 0;  // block k runs (stride * k + offset) % nblocks
  if (g_schedule_mode == 2 && nblocks > 1) {
    offset = next_random() % nblocks;
    for (int tries = 0; tries < 64; ++tries) {
      const unsigned long long a = 1 + next_random() % (nblocks - 1);
      if (gcd(a, nblocks) == 1) { stride = a; break; }
    }
  }
  for (unsigned long long k = 0; k < nblocks && rc == kOk; ++k) {
    const unsigned long long linear =
        g_schedule_mode == 1 ? nblocks - 1 - k
                             : (unsigned long long)(((unsigned __int128)stride * k + offset) % nblocks);
    g_block_idx = uint3{(unsigned)(linear % grid[0]), (unsigned)(linear / grid[0] % grid[1]),
                        (unsigned)(linear / ((unsigned long long)grid[0] * grid[1]))};
    poison(static_lo, static_bytes);  // exposes reads before writes and missing barriers
    poison(dyn_smem, shared_bytes);
    rc = run_block();
  }
  g_cur = nullptr;
  return rc;
}

}  // namespace emu

extern "C" EMU_EXPORT const char* emu_last_error(void) { return emu::g_error; }
extern "C" EMU_EXPORT void emu_set_schedule(unsigned mode, unsigned long long seed) {
  emu::g_schedule_mode = mode;
  emu::g_schedule_state = (seed * 0x9E3779B97F4A7C15ull) | 1;  // xorshift needs a nonzero state
}
extern "C" EMU_EXPORT unsigned long long emu_static_shared_bytes(void) {
  return __start_emu_shared ? (unsigned long long)(__stop_emu_shared - __start_emu_shared) : 0;
}
