// The built-in fuzz driver: a libFuzzer-compatible main for builds without libFuzzer (GCC, the
// ASan/UBSan preset). No coverage feedback; instead a pool of inputs that reached something new
// (accepted, or a rejection class not seen before) is mutated with libFuzzer's kinds of mutations:
// bit flips, random and "interesting" bytes and integers (sizes, offsets, -1, 2^31, 2^63), inserts,
// erases, copies of ranges, splices of two inputs, and dictionary tokens (-dict=FILE, libFuzzer's
// format). Flags (libFuzzer's spelling): -max_total_time=S -runs=N -seed=N -max_len=N -dict=FILE
// -timeout=S -artifact_prefix=P, then corpus folders or files. A crash (sanitizer report, abort,
// signal) or a run over -timeout writes the input to P crash-<hash> / timeout-<hash> first.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "fuzz_common.h"

#if defined(__has_include)
#if __has_include(<sanitizer/common_interface_defs.h>)
#include <sanitizer/common_interface_defs.h>
#define LLMC_HAVE_SANITIZER_IFACE 1
#endif
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using Bytes = std::vector<uint8_t>;

// The input being run, for the crash handlers (async-signal-safe writes only).
const uint8_t* g_cur = nullptr;
size_t g_cur_size = 0;
char g_artifact[4096];  // prefix
const char* g_kind = "crash";

uint64_t fnv(const uint8_t* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

void dump_current() {
  if (!g_cur && g_cur_size) return;
  char path[4200];
  const uint64_t h = fnv(g_cur, g_cur_size);
  char hex[17];
  for (int i = 0; i < 16; ++i) hex[i] = "0123456789abcdef"[(h >> (60 - 4 * i)) & 15];
  hex[16] = 0;
  size_t n = 0;
  for (const char* s : {static_cast<const char*>(g_artifact), g_kind, "-", static_cast<const char*>(hex)})
    for (; *s && n + 1 < sizeof path; ++s) path[n++] = *s;
  path[n] = 0;
  const int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    size_t off = 0;
    while (off < g_cur_size) {
      const ssize_t w = ::write(fd, g_cur + off, g_cur_size - off);
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
    ::close(fd);
  }
  const char msg[] = "\nfuzz-driver: input written to ";
  (void)!::write(2, msg, sizeof msg - 1);
  (void)!::write(2, path, n);
  (void)!::write(2, "\n", 1);
}

void on_signal(int sig) {
  if (sig == SIGALRM) g_kind = "timeout";
  dump_current();
  ::signal(sig, SIG_DFL);
  if (sig == SIGALRM) ::_exit(70);
  ::raise(sig);
}

void on_sanitizer_death() { dump_current(); }

// libFuzzer dictionary: lines `name="value"` or `"value"`, \\ \" and \xNN escapes, # comments.
std::vector<Bytes> read_dict(const std::string& path) {
  std::vector<Bytes> out;
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "fuzz-driver: cannot read dictionary %s\n", path.c_str());
    std::exit(1);
  }
  std::string line;
  while (std::getline(in, line)) {
    const size_t a = line.find('"'), b = line.rfind('"');
    if (line.empty() || line[0] == '#' || a == std::string::npos || b <= a) continue;
    Bytes v;
    for (size_t i = a + 1; i < b; ++i) {
      if (line[i] == '\\' && i + 1 < b) {
        if (line[i + 1] == 'x' && i + 3 < b) {
          v.push_back(static_cast<uint8_t>(std::stoi(line.substr(i + 2, 2), nullptr, 16)));
          i += 3;
        } else {
          v.push_back(static_cast<uint8_t>(line[++i]));
        }
      } else {
        v.push_back(static_cast<uint8_t>(line[i]));
      }
    }
    if (!v.empty()) out.push_back(v);
  }
  return out;
}

class Mutator {
 public:
  Mutator(uint64_t seed, size_t max_len, std::vector<Bytes> dict)
      : rng_(seed), max_len_(max_len), dict_(std::move(dict)) {}

  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng_() % n); }

  Bytes mutate(const Bytes& in, const std::vector<Bytes>& pool) {
    Bytes b = in;
    const int rounds = 1 + static_cast<int>(below(4));
    for (int r = 0; r < rounds; ++r) one(b, pool);
    if (b.size() > max_len_) b.resize(max_len_);
    return b;
  }

 private:
  template <typename T>
  void put_int(Bytes& b, size_t pos, T v) {
    if (rng_() & 1) {  // big-endian sometimes
      T s = 0;
      for (size_t i = 0; i < sizeof(T); ++i) s = static_cast<T>((s << 8) | ((v >> (8 * i)) & 0xff));
      v = s;
    }
    std::memcpy(b.data() + pos, &v, sizeof(T));
  }

  uint64_t interesting(const Bytes& b) {
    static const uint64_t k[] = {0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 1023, 1024,
                                 4095, 4096, 65535, 65536, 0x7fffffffull, 0x80000000ull, 0xffffffffull,
                                 0x100000000ull, 0x7fffffffffffffffull, 0x8000000000000000ull, ~0ull};
    switch (below(4)) {
      case 0: return b.size() + below(17) - 8;  // near the input's size (offsets, lengths)
      case 1: return rng_() >> below(64);
      default: return k[below(sizeof k / sizeof k[0])];
    }
  }

  void one(Bytes& b, const std::vector<Bytes>& pool) {
    const size_t n = b.size();
    switch (below(n == 0 ? 3 : 13)) {
      case 0: {  // insert random bytes
        const size_t pos = below(n + 1), len = 1 + below(8);
        Bytes ins(len);
        for (auto& x : ins) x = static_cast<uint8_t>(rng_());
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(pos), ins.begin(), ins.end());
        break;
      }
      case 1:  // insert a dictionary token
      case 2: {
        if (dict_.empty()) break;
        const Bytes& t = dict_[below(dict_.size())];
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(below(n + 1)), t.begin(), t.end());
        break;
      }
      case 3: b[below(n)] ^= static_cast<uint8_t>(1u << below(8)); break;
      case 4: b[below(n)] = static_cast<uint8_t>(rng_()); break;
      case 5: {
        static const uint8_t k[] = {0, 1, 0x7f, 0x80, 0xff, '"', '\\', '{', '}', '[', ']', ',', ':', '\n', '0', '-'};
        b[below(n)] = k[below(sizeof k)];
        break;
      }
      case 6: {  // an integer of 1, 2, 4 or 8 bytes set to an interesting value
        const size_t w = size_t{1} << below(4);
        if (n < w) break;
        const size_t pos = below(n - w + 1);
        const uint64_t v = interesting(b);
        if (w == 1) b[pos] = static_cast<uint8_t>(v);
        else if (w == 2) put_int<uint16_t>(b, pos, static_cast<uint16_t>(v));
        else if (w == 4) put_int<uint32_t>(b, pos, static_cast<uint32_t>(v));
        else put_int<uint64_t>(b, pos, v);
        break;
      }
      case 7: {  // add a small delta to an aligned u64 / u32 (sizes, counts, offsets)
        const size_t w = below(2) ? 8 : 4;
        if (n < w) break;
        const size_t pos = below(n / w) * w;
        const int64_t d = static_cast<int64_t>(below(65)) - 32;
        if (w == 8) {
          uint64_t v;
          std::memcpy(&v, b.data() + pos, 8);
          v += static_cast<uint64_t>(d);
          std::memcpy(b.data() + pos, &v, 8);
        } else {
          uint32_t v;
          std::memcpy(&v, b.data() + pos, 4);
          v += static_cast<uint32_t>(d);
          std::memcpy(b.data() + pos, &v, 4);
        }
        break;
      }
      case 8: {  // erase a range
        const size_t pos = below(n), len = 1 + below(std::min<size_t>(n - pos, 64));
        b.erase(b.begin() + static_cast<std::ptrdiff_t>(pos), b.begin() + static_cast<std::ptrdiff_t>(pos + len));
        break;
      }
      case 9: {  // copy a range over another place / insert a copy
        const size_t from = below(n), len = 1 + below(std::min<size_t>(n - from, 64));
        const Bytes part(b.begin() + static_cast<std::ptrdiff_t>(from), b.begin() + static_cast<std::ptrdiff_t>(from + len));
        const size_t to = below(n + 1);
        if (rng_() & 1) {
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(to), part.begin(), part.end());
        } else {
          for (size_t i = 0; i < part.size() && to + i < b.size(); ++i) b[to + i] = part[i];
        }
        break;
      }
      case 10: {  // splice: our head with another input's tail
        if (pool.empty()) break;
        const Bytes& o = pool[below(pool.size())];
        if (o.empty()) break;
        const size_t cut = below(n + 1), ocut = below(o.size());
        b.resize(cut);
        b.insert(b.end(), o.begin() + static_cast<std::ptrdiff_t>(ocut), o.end());
        break;
      }
      case 11: b.resize(below(n + 1)); break;  // truncate
      default: {  // a decimal digit run changed (JSON numbers, shapes, offsets in text)
        std::vector<size_t> digits;
        for (size_t i = 0; i < n; ++i)
          if (b[i] >= '0' && b[i] <= '9') digits.push_back(i);
        if (digits.empty()) break;
        const size_t pos = digits[below(digits.size())];
        static const char* const k[] = {"0", "-1", "1e309", "4294967296", "18446744073709551616", "9223372036854775807",
                                        "0.5", "-0", "1e-320", "65536", "2147483648", "NaN"};
        const std::string s = k[below(sizeof k / sizeof k[0])];
        size_t end = pos;
        while (end < n && b[end] >= '0' && b[end] <= '9') ++end;
        b.erase(b.begin() + static_cast<std::ptrdiff_t>(pos), b.begin() + static_cast<std::ptrdiff_t>(end));
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(pos), s.begin(), s.end());
        break;
      }
    }
  }

  std::mt19937_64 rng_;
  size_t max_len_;
  std::vector<Bytes> dict_;
};

bool flag(const std::string& a, const char* name, std::string* v) {
  const std::string p = std::string("-") + name + "=";
  if (a.compare(0, p.size(), p) != 0) return false;
  *v = a.substr(p.size());
  return true;
}

Bytes read_file(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

int main(int argc, char** argv) {
  double max_time = 0;
  uint64_t max_runs = 0, seed = 0;
  size_t max_len = 1 << 16;
  unsigned timeout = 20;
  std::string artifact = "./", dict_path;
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    std::string v;
    if (flag(a, "max_total_time", &v)) max_time = std::stod(v);
    else if (flag(a, "runs", &v)) max_runs = std::stoull(v);
    else if (flag(a, "seed", &v)) seed = std::stoull(v);
    else if (flag(a, "max_len", &v)) max_len = std::stoull(v);
    else if (flag(a, "timeout", &v)) timeout = static_cast<unsigned>(std::stoul(v));
    else if (flag(a, "artifact_prefix", &v)) artifact = v;
    else if (flag(a, "dict", &v)) dict_path = v;
    else if (!a.empty() && a[0] == '-') std::fprintf(stderr, "fuzz-driver: ignoring flag %s\n", a.c_str());
    else inputs.push_back(a);
  }
  if (seed == 0) seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  std::snprintf(g_artifact, sizeof g_artifact, "%s", artifact.c_str());
  for (int s : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGALRM}) ::signal(s, on_signal);
#ifdef LLMC_HAVE_SANITIZER_IFACE
  __sanitizer_set_death_callback(on_sanitizer_death);
#endif

  std::vector<Bytes> pool;
  for (const auto& in : inputs) {
    if (std::filesystem::is_directory(in)) {
      std::vector<std::string> files;
      for (const auto& e : std::filesystem::directory_iterator(in))
        if (e.is_regular_file()) files.push_back(e.path().string());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) pool.push_back(read_file(f));
    } else {
      pool.push_back(read_file(in));
    }
  }
  if (pool.empty()) pool.push_back({});
  const size_t seeds = pool.size();
  Mutator mut(seed, max_len, dict_path.empty() ? std::vector<Bytes>{} : read_dict(dict_path));
  llmc::fuzz::Stats& st = llmc::fuzz::stats();

  auto run_one = [&](const Bytes& b) {
    g_cur = b.data();
    g_cur_size = b.size();
    ::alarm(timeout);
    LLVMFuzzerTestOneInput(b.data(), b.size());
    ::alarm(0);
  };
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  for (size_t i = 0; i < seeds; ++i) run_one(pool[i]);
  uint64_t execs = seeds;
  double next_report = 10;
  while ((max_runs == 0 || execs < max_runs) && (max_time <= 0 || elapsed() < max_time)) {
    if (max_runs == 0 && max_time <= 0 && execs >= 100000) break;  // neither limit given
    const size_t pick = mut.below(4) == 0 ? mut.below(seeds) : mut.below(pool.size());
    const Bytes b = mut.mutate(pool[pick], pool);
    const uint64_t acc = st.accepted;
    const size_t cls = st.classes.size();
    run_one(b);
    ++execs;
    // Something new (an accepted input, a rejection of a new class): keep it to mutate further.
    if ((st.accepted != acc && mut.below(64) == 0) || st.classes.size() != cls) {
      if (pool.size() < 4096) pool.push_back(b);
      else pool[seeds + mut.below(pool.size() - seeds)] = b;
    }
    if (elapsed() >= next_report) {
      std::fprintf(stderr, "fuzz-driver: #%llu %.0f s, %.0f exec/s, pool %zu, %zu error classes\n",
                   static_cast<unsigned long long>(execs), elapsed(), execs / elapsed(), pool.size(), st.classes.size());
      next_report += 30;
    }
  }
  std::fprintf(stderr, "fuzz-driver: done: %llu executions in %.1f s (%.0f exec/s), pool %zu (seed %llu), crashes 0\n",
               static_cast<unsigned long long>(execs), elapsed(), execs / std::max(elapsed(), 1e-9), pool.size(),
               static_cast<unsigned long long>(seed));
  return 0;
}
