#pragma once
// What `search` keeps in its --out folder and the rules around it (issue 21):
//   - OUT holds only what search writes (kSearchOutputs, their `.tmp.<pid>` siblings while
//     written); a folder with anything else in it is refused (top level: unless --force), never
//     cleaned. `--out /` is refused. OUT/search.lock (flock) keeps a second run off the folder.
//   - --resume compares the checkpoint's fingerprint (every config value that changes the result;
//     model, data and latency table by content, not by how their paths are spelled) and validates
//     state.json before any other work.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "llmc/core/process.h"
#include "llmc/nas/search_config.h"

namespace llmc {

// Validates OUT (see above), creates it, and takes its lock for the run. Throws llmc::Error with
// one line naming the folder or the foreign entry.
std::unique_ptr<FileLock> claim_search_out(const std::string& out, bool force);

// The latency table a run reads: the config's `lut`, else the run's own OUT/lut.json.
std::string search_lut_path(const SearchConfig& c, const std::string& out);

// Every config value that changes the result, as JSON text; the model, data files and the latency
// table at lut_path by content hash.
std::string search_fingerprint(const SearchConfig& c, const std::string& lut_path);

struct SearchCheckpointMeta {
  std::string dir;  // the folder read (checkpoint/ or checkpoint.old/)
  int64_t step = 0;
  std::string rng;  // std::mt19937_64 state text
  int64_t arch_t = 0, w_t = 0;
  int phase = 1;
  std::vector<int64_t> kv_fixed, mlp_fixed;
};

// checkpoint/, or checkpoint.old/ when a save was killed between its two renames.
std::string search_checkpoint_dir(const std::string& out);

// Reads OUT's checkpoint state.json: refuses one made with another fingerprint (naming the keys
// that differ) and fields out of range (step outside 1..steps, an rng state that does not parse,
// an unknown phase, ...), each with one line naming the file.
SearchCheckpointMeta read_search_checkpoint(const std::string& out, const SearchConfig& c,
                                            const std::string& fingerprint);

// state.json of a checkpoint (the inverse of read_search_checkpoint's parsing).
std::string search_checkpoint_json(const SearchCheckpointMeta& m, const std::string& fingerprint);

// Keeps the rows of a step log (one JSON object with "step" per line) up to `step`, rewritten
// atomically: a resumed run logs the steps after its checkpoint again, each once.
void trim_search_log(const std::string& path, int64_t step);

}  // namespace llmc
