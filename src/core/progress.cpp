#include "llmc/core/progress.h"

#include <unistd.h>

#include <cstdio>

#include "llmc/core/log.h"

namespace llmc {

namespace {
std::string fmt_eta(double s) {
  if (s < 0 || s > 1e7) return "?";
  int t = static_cast<int>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t / 60) % 60);
  return fmt::format("{:02}:{:02}", t / 60, t % 60);
}
}  // namespace

Progress::Progress(std::string label, int64_t total, std::string unit, double log_every_s)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), tty_(::isatty(2) != 0),
      log_every_s_(log_every_s), start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t n, const std::string& extra) {
  done_ += n;
  if (!extra.empty()) extra_ = extra;
  draw(false);
}

void Progress::draw(bool force) {
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  double min_gap = tty_ ? 0.1 : log_every_s_;
  if (!force && since < min_gap) return;
  last_draw_ = now;
  double el = std::chrono::duration<double>(now - start_).count();
  double rate = el > 0 ? done_ / el : 0;
  double eta = (rate > 0 && total_ > 0) ? (total_ - done_) / rate : -1;
  double frac = total_ > 0 ? static_cast<double>(done_) / total_ : 0;
  if (tty_) {
    const int width = 30;
    int fill = static_cast<int>(frac * width);
    std::string bar(fill, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s [%s] %lld/%lld %.1f %s/s ETA %s %s\033[K", label_.c_str(), bar.c_str(),
                 static_cast<long long>(done_), static_cast<long long>(total_), rate, unit_.c_str(),
                 fmt_eta(eta).c_str(), extra_.c_str());
    std::fflush(stderr);
  } else {
    spdlog::info("{}: {}/{} ({:.0f}%), {:.1f} {}/s, ETA {} {}", label_, done_, total_, 100 * frac, rate,
                 unit_, fmt_eta(eta), extra_);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (tty_) {
    draw(true);
    std::fprintf(stderr, "\n");
  }
}

}  // namespace llmc
