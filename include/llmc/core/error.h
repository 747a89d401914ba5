#pragma once
// Errors a user can cause (bad paths, configs, checkpoints, data files) are thrown as llmc::Error
// with one line that names the file and the problem; the CLI prints it and exits with code 1.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace llmc {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// Throws llmc::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

// Check a condition that depends on user input.
#define LLMC_CHECK(cond, ...)                 \
  do {                                        \
    if (!(cond)) ::llmc::fail(__VA_ARGS__);   \
  } while (0)

}  // namespace llmc
