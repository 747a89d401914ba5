#pragma once
// Progress for long work: a bar with rate and ETA on stderr when it is a terminal, otherwise a log
// line every `log_every_s` seconds.
#include <chrono>
#include <cstdint>
#include <string>

namespace llmc {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit = "it", double log_every_s = 10.0);
  ~Progress();
  void advance(int64_t n = 1, const std::string& extra = "");
  void finish();

 private:
  void draw(bool force);
  std::string label_, unit_, extra_;
  int64_t total_, done_ = 0;
  bool tty_, finished_ = false;
  double log_every_s_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace llmc
