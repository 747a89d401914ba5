// Fuzz target: a search config (nas/search_config.h parse_search_config, with the search space
// parser of latency/space.h behind it), read with its folder holding a valid space.json. Relative
// paths resolve into the scratch folder; the target then checks what the parser promised.
#include <cmath>

#include "fuzz_common.h"
#include "llmc/nas/search_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string base = [] {
    llmc::fuzz::scratch_file("cfg/space.json",
                             std::string(R"({"kv_group_fractions": [1.0, 0.5], "mlp_width_fractions": [1.0, 0.5],)"
                                         R"( "bits": [2, 4, 16], "group_size": 32, "width_multiple": 8})"));
    return llmc::fuzz::scratch_dir() + "/cfg";
  }();
  const std::string text(reinterpret_cast<const char*>(data), size);
  llmc::fuzz::run([&] {
    const llmc::SearchConfig c = llmc::parse_search_config(text, base + "/config.json", base);
    if (c.target_ms > 0 ? !std::isfinite(c.target_ms) : !(c.target_fraction > 0 && c.target_fraction <= 1))
      llmc::fuzz::bug("accepted a target outside its range");
    if (c.seq_len < 1 || c.batch_size < 1 || c.steps < 0 || !(c.arch_lr >= 0) || !(c.weight_lr >= 0))
      llmc::fuzz::bug("accepted a negative or empty schedule/data value");
  });
  return 0;
}
