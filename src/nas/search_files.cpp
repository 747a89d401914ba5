#include "llmc/nas/search_files.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "llmc/core/error.h"
#include "llmc/core/files.h"

namespace llmc {

using ojson = nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {

// Fingerprint format: 1 was a '|'-joined string with the model's path; 2 is this object.
constexpr int kFingerprintFormat = 2;

const char* const kTopLevel[] = {"arch.json", "summary.json", "search_log.jsonl", "lut.json", "search.lock",
                                 "checkpoint", "checkpoint.tmp", "checkpoint.old"};
const char* const kCheckpointFiles[] = {"state.json", "state.safetensors"};
const char* const kCheckpointDirs[] = {"checkpoint", "checkpoint.tmp", "checkpoint.old"};

// `name`, or `name.tmp.<digits>` (write_file_atomic's temporary while it writes `name`).
template <size_t N>
bool one_of(const std::string& entry, const char* const (&names)[N]) {
  for (const char* n : names) {
    const std::string s = n;
    if (entry == s) return true;
    const std::string tmp = s + ".tmp.";
    if (entry.size() > tmp.size() && entry.compare(0, tmp.size(), tmp) == 0 &&
        std::all_of(entry.begin() + tmp.size(), entry.end(), [](unsigned char c) { return std::isdigit(c); }))
      return true;
  }
  return false;
}

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec))
    out.push_back(it->path().filename().string());
  if (ec) fail("{}: cannot list ({})", dir, ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

// The keys (a.b for nested objects) where two fingerprints differ.
void diff_keys(const ojson& a, const ojson& b, const std::string& prefix, std::vector<std::string>* out) {
  if (a.is_object() && b.is_object() && std::count(prefix.begin(), prefix.end(), '.') < 2) {
    std::vector<std::string> keys;
    for (auto it = a.begin(); it != a.end(); ++it) keys.push_back(it.key());
    for (auto it = b.begin(); it != b.end(); ++it)
      if (!a.contains(it.key())) keys.push_back(it.key());
    for (const auto& k : keys) {
      static const ojson kNull;
      diff_keys(a.contains(k) ? a.at(k) : kNull, b.contains(k) ? b.at(k) : kNull, prefix + "." + k, out);
    }
    return;
  }
  if (a != b) out->push_back(prefix);
}

}  // namespace

std::unique_ptr<FileLock> claim_search_out(const std::string& out, bool force) {
  if (out.empty()) fail("--out: empty path");
  std::error_code ec;
  const fs::path canon = fs::weakly_canonical(fs::absolute(out, ec), ec);
  if (!ec && canon == canon.root_path())
    fail("--out {}: refusing to write a search into the root folder; name a folder of its own", out);
  if (fs::exists(out, ec) && !dir_exists(out)) fail("--out {}: exists and is not a folder", out);
  if (dir_exists(out)) {
    for (const auto& e : entries(out)) {
      const std::string p = path_join(out, e);
      if (!one_of(e, kTopLevel)) {
        if (force) continue;  // left alone: search neither reads, writes nor removes it
        fail("--out {}: holds '{}', which search did not write; use an empty or new folder (or --force to write "
             "next to it)",
             out, e);
      }
      // Checkpoint folders are replaced as a whole: anything foreign in them would be deleted.
      if (one_of(e, kCheckpointDirs) && dir_exists(p))
        for (const auto& f : entries(p))
          if (!one_of(f, kCheckpointFiles))
            fail("--out {}: {} holds '{}', which search did not write (a checkpoint folder is replaced as a whole); "
                 "move it away first",
                 out, e, f);
    }
  }
  make_dirs(out);
  const std::string lock_path = path_join(out, "search.lock");
  auto lock = FileLock::try_lock(lock_path);
  if (!lock) fail("--out {}: another search is running on this folder ({} is locked)", out, lock_path);
  return lock;
}

std::string search_lut_path(const SearchConfig& c, const std::string& out) {
  return c.lut.empty() ? path_join(out, "lut.json") : c.lut;
}

std::string search_fingerprint(const SearchConfig& c, const std::string& lut_path) {
  ojson data = ojson::object();
  if (c.data_sources.empty()) {
    data["sources"] = "generate";  // data-free calibration, seeded by schedule.seed
  } else {
    ojson s = ojson::array();
    for (const auto& src : c.data_sources) {
      if (src.rfind("text:", 0) == 0) {
        s.push_back(content_hash(src.substr(5)));
      } else {  // fewshot:TASK: what its documents say, wherever the split was found
        std::string all;
        for (const auto& d : data_source_documents(c, src)) all += d.text + '\0';
        s.push_back(bytes_hash(all));
      }
    }
    data["sources"] = s;
  }
  data["seq_len"] = c.seq_len;
  data["batch_size"] = c.batch_size;
  data["train_sequences"] = c.train_sequences;
  data["valid_sequences"] = c.valid_sequences;
  ojson target = ojson::object();
  if (c.target_ms > 0) target["ms"] = c.target_ms;
  else target["fraction"] = c.target_fraction;
  if (c.target_ms <= 0 && c.target_relative_bits > 0) target["relative_to"] = "uniform:" + std::to_string(c.target_relative_bits);
  target["tokens"] = c.target_tokens;
  ojson schedule = {{"steps", c.steps},
                          {"arch_lr", c.arch_lr},
                          {"weight_lr", c.weight_lr},
                          {"lora_rank", c.lora_rank},
                          {"lambda", c.lambda},
                          {"tau_start", c.tau_start},
                          {"tau_end", c.tau_end},
                          {"hard", c.hard},
                          {"distill", c.distill},
                          {"fit_target", c.fit_target},
                          {"discretize", c.discretize},
                          {"seed", c.seed},
                          {"sequential_mid_bits", c.sequential_mid_bits},
                          {"init", c.init},
                          {"init_scale", c.init_scale}};
  if (c.arch_optimizer != "adam") schedule["arch_optimizer"] = c.arch_optimizer;  // older checkpoints: adam
  if (c.knapsack_width_weights != std::vector<double>{1.0})  // older checkpoints: [1]
    schedule["knapsack_width_weights"] = c.knapsack_width_weights;
  if (c.sensitivity_passes != 1) schedule["sensitivity_passes"] = c.sensitivity_passes;  // older: 1
  const ojson j = {{"format", kFingerprintFormat},
                   {"model", content_hash(c.model)},
                   {"data", data},
                   {"space", ojson::parse(c.space.canonical_json())},
                   {"lut", content_hash(lut_path)},
                   {"target", target},
                   {"schedule", schedule},
                   {"mode", c.mode}};
  return j.dump();
}

std::string search_checkpoint_dir(const std::string& out) {
  const std::string dir = path_join(out, "checkpoint"), old = path_join(out, "checkpoint.old");
  return !dir_exists(dir) && dir_exists(old) ? old : dir;
}

std::string search_checkpoint_json(const SearchCheckpointMeta& m, const std::string& fingerprint) {
  const ojson j = {{"step", m.step},
                   {"rng", m.rng},
                   {"adam_arch_t", m.arch_t},
                   {"adam_w_t", m.w_t},
                   {"phase", m.phase},
                   {"kv_fixed", m.kv_fixed},
                   {"mlp_fixed", m.mlp_fixed},
                   {"config", ojson::parse(fingerprint)}};
  return j.dump(1);
}

SearchCheckpointMeta read_search_checkpoint(const std::string& out, const SearchConfig& c,
                                            const std::string& fingerprint) {
  SearchCheckpointMeta m;
  m.dir = search_checkpoint_dir(out);
  const std::string p = path_join(m.dir, "state.json");
  if (!file_exists(p)) fail("{}: no checkpoint to resume from", p);
  ojson j;
  try {
    j = ojson::parse(read_text_file(p));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: corrupt checkpoint, not JSON ({})", p, e.what());
  }
  if (!j.is_object()) fail("{}: corrupt checkpoint, not a JSON object", p);
  // The config first: a checkpoint of another run is refused whatever else it holds.
  if (!j.contains("config") || !j["config"].is_object())
    fail("{}: checkpoint was made by an older llmcompress (no config fingerprint to compare); start a new --out or "
         "drop --resume",
         p);
  std::vector<std::string> differ;
  diff_keys(j["config"], ojson::parse(fingerprint), "config", &differ);
  if (!differ.empty()) {
    std::string keys;
    for (const auto& k : differ) keys += (keys.empty() ? "" : ", ") + k.substr(7);
    fail("{}: checkpoint was made with a different config ({} differ); start a new --out or drop --resume", p, keys);
  }
  auto integer = [&](const char* key, int64_t lo, int64_t hi) -> int64_t {
    if (!j.contains(key)) fail("{}: corrupt checkpoint, '{}' is missing", p, key);
    const ojson& v = j[key];
    if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      fail("{}: corrupt checkpoint, '{}' is {} (expected an integer in {}..{})", p, key, v.dump(), lo, hi);
    return v.get<int64_t>();
  };
  auto widths = [&](const char* key) {
    std::vector<int64_t> w;
    if (!j.contains(key) || !j[key].is_array()) fail("{}: corrupt checkpoint, '{}' is not an array", p, key);
    for (const auto& x : j[key]) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0)
        fail("{}: corrupt checkpoint, '{}' holds {} (expected widths >= 0)", p, key, x.dump());
      w.push_back(x.get<int64_t>());
    }
    return w;
  };
  m.step = integer("step", 1, c.steps);
  m.arch_t = integer("adam_arch_t", 0, c.steps);
  m.w_t = integer("adam_w_t", 0, c.steps);
  m.phase = static_cast<int>(integer("phase", 1, c.mode == "sequential" ? 2 : 1));
  if (!j.contains("rng") || !j["rng"].is_string()) fail("{}: corrupt checkpoint, 'rng' is not a string", p);
  m.rng = j["rng"].get<std::string>();
  {
    std::mt19937_64 r;
    std::istringstream in(m.rng);
    in >> r;
    const bool parsed = !in.fail();
    in >> std::ws;
    if (!parsed || !in.eof()) fail("{}: corrupt checkpoint, 'rng' is not a random generator state", p);
  }
  m.kv_fixed = widths("kv_fixed");
  m.mlp_fixed = widths("mlp_fixed");
  if (m.phase == 2 && (m.kv_fixed.empty() || m.kv_fixed.size() != m.mlp_fixed.size()))
    fail("{}: corrupt checkpoint, phase 2 needs kv_fixed and mlp_fixed of one width per layer", p);
  return m;
}

void trim_search_log(const std::string& path, int64_t step) {
  if (!file_exists(path)) return;
  std::istringstream in(read_text_file(path));
  std::string line, kept;
  while (std::getline(in, line)) {
    ojson row;
    try {
      row = ojson::parse(line);
    } catch (const nlohmann::json::exception&) {
      continue;  // a line cut off by a kill
    }
    if (!row.is_object() || !row.contains("step") || !row["step"].is_number_integer()) continue;
    if (row["step"].get<int64_t>() <= step) kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

}  // namespace llmc
