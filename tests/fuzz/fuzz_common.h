#pragma once
// Shared by the fuzz targets (one LLVMFuzzerTestOneInput per executable). An input a parser must
// reject throws llmc::Error: that is an expected outcome, counted by message class. Anything else
// escaping (another exception type, a crash, a sanitizer report) is a bug: the target aborts, so
// libFuzzer or the built-in driver (driver.cpp) saves the input as a crash artifact.
#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <set>
#include <string>

#include "llmc/core/error.h"

namespace llmc::fuzz {

// This process's scratch folder ($TMPDIR or /tmp), removed at exit.
inline const std::string& scratch_dir() {
  // Never destroyed: the atexit handler that removes the folder runs after static destructors.
  static const std::string* dir = [] {
    const char* t = std::getenv("TMPDIR");
    auto* d = new std::string(std::string(t && *t ? t : "/tmp") + "/llmc-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(*d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return d;
  }();
  return *dir;
}

// Writes bytes to scratch_dir()/name (subfolders created) and returns the path.
inline std::string scratch_file(const std::string& name, const void* data, size_t size) {
  const std::string p = scratch_dir() + "/" + name;
  std::filesystem::create_directories(std::filesystem::path(p).parent_path());
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  f.close();
  if (!f) {
    std::fprintf(stderr, "fuzz: cannot write scratch file %s\n", p.c_str());
    std::abort();
  }
  return p;
}

inline std::string scratch_file(const std::string& name, const std::string& s) {
  return scratch_file(name, s.data(), s.size());
}

// The error message with the scratch folder and every run of digits blanked: one class per kind of
// rejection, whatever the offsets and sizes in it.
inline std::string error_class(std::string m) {
  const std::string& d = scratch_dir();
  for (size_t p; (p = m.find(d)) != std::string::npos;) m.replace(p, d.size(), "<in>");
  std::string out;
  for (size_t i = 0; i < m.size() && out.size() < 160; ++i) {
    if (std::isdigit(static_cast<unsigned char>(m[i]))) {
      if (out.empty() || out.back() != '#') out += '#';
    } else {
      out += m[i];
    }
  }
  return out;
}

struct Stats {
  uint64_t runs = 0, accepted = 0, rejected = 0;
  std::set<std::string> classes;
};

inline Stats& stats() {
  static Stats* s = [] {
    auto* p = new Stats;
    std::atexit([] {
      const Stats& t = stats();
      std::fprintf(stderr, "fuzz-stats: inputs %llu, accepted %llu, rejected %llu (%zu distinct error classes)\n",
                   static_cast<unsigned long long>(t.runs), static_cast<unsigned long long>(t.accepted),
                   static_cast<unsigned long long>(t.rejected), t.classes.size());
      if (std::getenv("LLMC_FUZZ_PRINT_CLASSES"))
        for (const auto& c : t.classes) std::fprintf(stderr, "fuzz-class: %s\n", c.c_str());
    });
    return p;
  }();
  return *s;
}

// An invariant the parser promised does not hold for an input it accepted: a bug.
[[noreturn]] inline void bug(const std::string& what) {
  std::fprintf(stderr, "fuzz: BUG: %s\n", what.c_str());
  std::abort();
}

// Runs one input's work. llmc::Error: a rejection, as the parsers promise. Any other exception: a
// bug (the contract is a one-line llmc::Error naming the file), reported and aborted on.
inline void run(const std::function<void()>& f) {
  Stats& s = stats();
  ++s.runs;
  try {
    f();
    ++s.accepted;
  } catch (const llmc::Error& e) {
    ++s.rejected;
    if (s.classes.size() < 100000) s.classes.insert(error_class(e.what()));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: BUG: an exception other than llmc::Error escaped: %s\n", e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "fuzz: BUG: a non-std exception escaped\n");
    std::abort();
  }
}

// Encodes each text on its own with `tok` (a rejection is fine: a vocabulary may lack a byte and
// have no <unk>), checks every id is inside the vocabulary, and decodes the ids again.
template <class Tok>
void check_encode_decode(const Tok& tok, std::initializer_list<const char*> texts) {
  for (const char* text : texts)
    run([&] {
      const auto ids = tok.encode(text, true);
      for (int32_t id : ids)
        if (id < 0 || id >= tok.vocab_size()) bug("encode gave an id outside the vocabulary");
      tok.decode(ids);
    });
}

}  // namespace llmc::fuzz
