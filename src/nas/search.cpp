#include "llmc/nas/search.h"
#include "llmc/nas/sensitivity.h"

#include <ATen/ATen.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/log.h"
#include "llmc/core/progress.h"
#include "llmc/data/text_docs.h"
#include "llmc/data/calibration.h"
#include "llmc/data/token_stream.h"
#include "llmc/finetune/dist.h"
#include "llmc/finetune/train.h"
#include "llmc/io/safetensors.h"
#include "llmc/latency/lut.h"
#include "llmc/model/load.h"
#include "llmc/nas/importance.h"
#include "llmc/nas/knapsack.h"
#include "llmc/nas/search_files.h"
#include "llmc/nas/supernet.h"
#include "llmc/quant/quant.h"
#include "llmc/runtime/engine.h"

namespace llmc {

using ojson = nlohmann::ordered_json;

namespace {

std::atomic<bool> g_stop{false};
std::atomic<bool> g_in_steps{false};  // inside the step loop, where a stop writes a checkpoint
// In the step loop: stop at the end of the step (checkpoint). Before it (loading, LUT, sampling
// calibration text) there is nothing to save: leave at once, as the user asked.
extern "C" void on_signal(int sig) {
  if (g_in_steps.load()) {
    g_stop.store(true);
    return;
  }
  // (Also after the steps: discretizing, or leaving on an error when a launcher stops the ranks.)
  static const char msg[] = "\nsearch: interrupted outside the step loop; nothing (more) to checkpoint\n";
  ssize_t ignored = ::write(2, msg, sizeof msg - 1);
  (void)ignored;
  ::_exit(128 + sig);
}

std::string rng_state(const std::mt19937_64& r) {
  std::ostringstream s;
  s << r;
  return s.str();
}

struct PhaseState {
  int phase = 1;  // sequential: 1 = width search, 2 = bits search
  std::vector<int64_t> kv_fixed, mlp_fixed;  // sequential phase 2: widths from phase 1
};

void save_checkpoint(const std::string& out, const Supernet& net, const Adam& arch_opt, const Adam* w_opt,
                     int64_t step, const std::mt19937_64& rng, const PhaseState& ps, const std::string& fingerprint) {
  const std::string dir = path_join(out, "checkpoint"), tmp = path_join(out, "checkpoint.tmp");
  remove_tree(tmp);  // a save killed earlier (claim_search_out made sure it holds only our files)
  make_dirs(tmp);
  std::vector<at::Tensor> keep;
  std::vector<TensorToWrite> ts;
  auto add = [&](const std::string& name, const at::Tensor& t) {
    keep.push_back(t.detach().to(at::kFloat).contiguous());
    ts.push_back({name, DType::F32, keep.back().sizes().vec(), keep.back().data_ptr()});
  };
  for (const auto& [name, t] : net.state()) add(name, t);
  for (const auto& [name, t] : arch_opt.state("adam_arch")) add(name, t);
  if (w_opt)
    for (const auto& [name, t] : w_opt->state("adam_w")) add(name, t);
  write_safetensors(path_join(tmp, "state.safetensors"), ts);
  SearchCheckpointMeta m;
  m.step = step;
  m.rng = rng_state(rng);
  m.arch_t = arch_opt.steps();
  m.w_t = w_opt ? w_opt->steps() : 0;
  m.phase = ps.phase;
  m.kv_fixed = ps.kv_fixed;
  m.mlp_fixed = ps.mlp_fixed;
  write_file_atomic(path_join(tmp, "state.json"), search_checkpoint_json(m, fingerprint));
  // A complete checkpoint exists at every instant: the old one moves aside, the new one into place,
  // and only then is the old one removed (a kill in between leaves checkpoint.old to resume from).
  const std::string old = path_join(out, "checkpoint.old");
  remove_tree(old);
  if (dir_exists(dir)) rename_path(dir, old);
  rename_path(tmp, dir);
  remove_tree(old);
}

void restore_tensors(const std::string& dir, Supernet& net, Adam& arch_opt, Adam* w_opt) {
  const std::string p = path_join(dir, "state.safetensors");
  SafetensorsFile f(p);
  at::NoGradGuard ng;
  auto load = [&](const std::string& name, at::Tensor& dst) {
    const TensorInfo* t = f.find(name);
    if (!t || t->dtype != DType::F32 || t->numel() != dst.numel())
      fail("{}: checkpoint tensor '{}' missing or of the wrong size", p, name);
    dst.copy_(at::from_blob(const_cast<uint8_t*>(f.data(*t)), dst.sizes(), at::kFloat));
  };
  for (auto& [name, t] : net.state()) {
    at::Tensor x = t;
    load(name, x);
  }
  for (auto& [name, t] : arch_opt.state("adam_arch")) load(name, t);
  if (w_opt)
    for (auto& [name, t] : w_opt->state("adam_w")) load(name, t);
}

double peak_rss_mib() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

// The argmax architecture can miss the target that the expected latency met (the distributions are
// not one-hot). Greedy repair: apply the single choice change (one step narrower KV or MLP width, or
// another bit width of one linear) that saves the most predicted latency per unit of
// log-probability it gives up, until the prediction meets the target. Returns the changes made.
int fit_to_target(std::vector<ChoiceIndex>& idx, const std::vector<ChoiceLogProbs>& lp,
                  const std::vector<LayerChoices>& ch, const std::function<double(const std::vector<ChoiceIndex>&)>& ms,
                  double target_ms) {
  int changes = 0;
  double cur = ms(idx);
  while (cur > target_ms) {
    double best_score = -1, best_ms = cur;
    std::vector<ChoiceIndex> best;
    auto consider = [&](std::vector<ChoiceIndex>& cand, double logp_cost) {
      const double t = ms(cand);
      if (t >= cur) return;
      const double score = (cur - t) / std::max(logp_cost, 1e-6);
      if (score > best_score) best_score = score, best_ms = t, best = cand;
    };
    std::vector<ChoiceIndex> cand = idx;  // idx with one change at a time (restored after each)
    for (size_t l = 0; l < idx.size(); ++l) {
      const ChoiceIndex c = idx[l];
      if (c.kv + 1 < static_cast<int64_t>(ch[l].kv.size())) {
        cand[l].kv = c.kv + 1;
        consider(cand, lp[l].kv[c.kv] - lp[l].kv[c.kv + 1]);
        cand[l] = c;
      }
      if (c.mlp + 1 < static_cast<int64_t>(ch[l].mlp.size())) {
        cand[l].mlp = c.mlp + 1;
        consider(cand, lp[l].mlp[c.mlp] - lp[l].mlp[c.mlp + 1]);
        cand[l] = c;
      }
      for (int j = 0; j < kNumLinears; ++j)
        for (int64_t b = 0; b < static_cast<int64_t>(ch[l].bits.size()); ++b) {
          if (b == c.bits[j]) continue;
          cand[l].bits[j] = b;
          consider(cand, lp[l].bits[j][c.bits[j]] - lp[l].bits[j][b]);
          cand[l] = c;
        }
    }
    if (best.empty()) break;  // nothing is faster: the caller reports the miss
    idx = std::move(best);
    cur = best_ms;
    ++changes;
  }
  return changes;
}

// Choices (widths and bits) in which two architectures differ.
int count_changes(const std::vector<ChoiceIndex>& a, const std::vector<ChoiceIndex>& b) {
  int n = 0;
  for (size_t l = 0; l < a.size(); ++l) {
    n += (a[l].kv != b[l].kv) + (a[l].mlp != b[l].mlp);
    for (int j = 0; j < kNumLinears; ++j) n += a[l].bits[j] != b[l].bits[j];
  }
  return n;
}

// batches_perplexity with every batch split over the data-parallel ranks (the same value up to
// summation order; one process: exactly batches_perplexity's sums).
double dp_perplexity(CausalLM& model, const std::vector<at::Tensor>& batches) {
  DataParallel& dp = DataParallel::get();
  if (!dp.active()) return batches_perplexity(model, batches);
  at::NoGradGuard ng;
  std::vector<double> sums{0, 0};  // nll, predictions
  for (const auto& b : batches) {
    double w = 0;
    const at::Tensor part = dp.shard_rows(b, &w, "a valid batch");
    const int64_t k = part.size(0) * (part.size(1) - 1);
    sums[0] += next_token_cross_entropy(model.forward(part), part).item<double>() * k;
    sums[1] += k;
  }
  sums = dp.all_reduce_sum(sums, "perplexity");
  return std::exp(sums[0] / std::max(1.0, sums[1]));
}

// The search's batches: (batch_size, seq_len) int64, train then valid sequences.
struct Data {
  std::vector<at::Tensor> train, valid;
};

// One search run: the steps of the method, in the order run_search calls them.
class Search {
 public:
  Search(const SearchConfig& c, const SearchOptions& opts) : c_(c), opts_(opts) {}

  // --resume: the checkpoint must be of this config (model, data and latency table by content) and
  // valid, checked before any other work (no model loaded, no table measured, no text sampled).
  void check_resume() {
    if (!opts_.resume) return;
    const std::string lut = search_lut_path(c_, opts_.out_dir);
    if (!file_exists(lut))
      fail("{}: the latency table this run's checkpoint was made with is missing; a resume would not be exact "
           "(start a new --out, or drop --resume)",
           lut);
    fingerprint_ = search_fingerprint(c_, lut);
    ck_ = read_search_checkpoint(opts_.out_dir, c_, fingerprint_);
  }

  // The model to search over, and the latency table of this model and space at M tokens.
  void load_model_and_latency() {
    model_ = load_llama(c_.model);
    base_ = model_->config();
    lut_ = load_or_build_lut();
    lat_ = lookup_from(lut_, M());
  }

  // Train and valid batches: text sources (token_stream.h, TokenizerDefault), or data-free
  // calibration sampled by the model.
  void prepare_data() {
    const int64_t n = c_.train_sequences + c_.valid_sequences;
    // Data parallel: rank 0 prepares the sequences, every rank gets the same global batches.
    at::Tensor seqs = dp_.is_root() ? (c_.data_sources.empty() ? sampled_sequences(n) : text_sequences(n))
                                          .to(at::kLong)
                                          .contiguous()
                                    : at::empty({n, c_.seq_len}, at::kLong);
    dp_.broadcast(seqs, "the search data");
    data_.train = split_batches(seqs.narrow(0, 0, c_.train_sequences), c_.batch_size);
    data_.valid = split_batches(seqs.narrow(0, c_.train_sequences, c_.valid_sequences), c_.batch_size);
    spdlog::info("data: {} train and {} valid batches of {}x{}", data_.train.size(), data_.valid.size(),
                 c_.batch_size, c_.seq_len);
  }

  // Teacher: the original model (the permutation below does not change its function).
  void load_teacher() {
    if (c_.distill) teacher_ = load_llama(c_.model);
  }

  // The original model's valid perplexity and the cost of a plain fine-tuning step.
  void measure_original() {
    res_.original_valid_ppl = dp_perplexity(*model_, data_.valid);
    plain_step_s_ = plain_step_seconds();
  }

  // Channel importance from the first train batches; the model is permuted so that a narrower
  // width keeps the most important channels.
  void permute_by_importance() {
    imp_ = compute_importance(
        *model_, {data_.train.begin(), data_.train.begin() + std::min<size_t>(4, data_.train.size())});
    permute_model(*model_, imp_);
  }

  void set_target() {
    res_.original_ms = lut_.predict_ms(uniform_arch(base_, 16, c_.space.group_size), M());
    double ref_ms = res_.original_ms;
    if (c_.target_relative_bits > 0 && c_.target_ms <= 0) {
      ref_ms = lut_.predict_ms(uniform_arch(base_, c_.target_relative_bits, c_.space.group_size), M());
      spdlog::info("target: {} x uniform {}-bit's {:.3f} ms", c_.target_fraction, c_.target_relative_bits, ref_ms);
    }
    res_.target_ms = c_.target_ms > 0 ? c_.target_ms : c_.target_fraction * ref_ms;
  }

  // From step 0, or from the checkpoint (--resume); opens the step log.
  void start_or_resume() {
    const std::string log = path_join(opts_.out_dir, "search_log.jsonl");
    if (opts_.resume) {
      ps_.phase = ck_.phase;
      ps_.kv_fixed = ck_.kv_fixed;
      ps_.mlp_fixed = ck_.mlp_fixed;
      if (ps_.phase == 2 && static_cast<int64_t>(ps_.kv_fixed.size()) != base_.num_layers)
        fail("{}/state.json: corrupt checkpoint, {} fixed widths for a model of {} layers", ck_.dir,
             ps_.kv_fixed.size(), base_.num_layers);
      start_step_ = ck_.step;
      std::istringstream(ck_.rng) >> rng_;
      spdlog::info("resuming at step {} (phase {})", start_step_, ps_.phase);
      // Rows after the checkpoint (logged before a kill) are logged again by the steps that redo them.
      if (dp_.is_root()) trim_search_log(log, start_step_);
    }
    if (dp_.is_root()) log_ = AppendFile(log, /*truncate=*/!opts_.resume);
  }

  // The supernet of the current phase; fails when the target is below the fastest architecture.
  void build_supernet() {
    net_ = make_net(ps_.phase);
    res_.fastest_ms = net_->latency_ms(net_->fastest()) + cheapest_head_ms();
    if (!seq() && res_.target_ms < res_.fastest_ms) fail_unreachable();
    if (seq()) {
      auto all = make_choices(base_, c_.space, true, true);
      Supernet probe(*model_, all, lat_, c_.space.group_size, 0, 0, /*install=*/false);
      res_.fastest_ms = probe.latency_ms(probe.fastest()) + cheapest_head_ms();
      if (res_.target_ms < res_.fastest_ms) fail_unreachable();
    }
    spdlog::info("search ({}): original {:.3f} ms, target {:.3f} ms, fastest possible {:.3f} ms at {} token(s)",
                 c_.mode, res_.original_ms, res_.target_ms, res_.fastest_ms, M());
    prepare_teacher_cache();
    // A resumed phase gets its logits from the checkpoint; a phase that starts now, its initial ones.
    const int64_t steps1 = seq() ? c_.steps / 2 : c_.steps;
    if (start_step_ == 0 || (seq() && ps_.phase == 2 && start_step_ == steps1)) init_alphas();
  }

  // The phases: one for joint / width-only / bits-only, two for sequential (widths, then bits on
  // the subnet of phase 1's widths). False when stopped (checkpoint written).
  bool run_phases() {
    const int64_t steps1 = seq() ? c_.steps / 2 : c_.steps;
    if (ps_.phase == 1) {
      if (!run_phase(1, start_step_, steps1, opts_.resume && start_step_ > 0)) return false;
      if (seq()) {
        fix_widths();
        net_ = make_net(2);
        init_alphas();
        start_step_ = steps1;
      }
    }
    if (seq() && ps_.phase == 2) {
      const bool restore = opts_.resume && ck_.phase == 2 && start_step_ > steps1;
      if (!run_phase(2, std::max(start_step_, steps1), c_.steps, restore)) return false;
    }
    return true;
  }

  // Argmax of every choice, then (fit_target) the greedy repair onto the target; the subnet is
  // fixed to it and scored on the valid split.
  void discretize() {
    auto idx = net_->argmax();
    auto predict = [&](const std::vector<ChoiceIndex>& x) {
      // predict_ms reads widths and bits only: no importance orders needed.
      Arch a = arch_of_choices(x, net_->choices(), base_);
      a.group_size = c_.space.group_size;
      return lut_.predict_ms(a, M());
    };
    res_.argmax_predicted_ms = predict(idx);
    bool scored = false;  // res_.valid_ppl is idx's already
    if (c_.discretize == "knapsack") {
      const auto argmax = idx;
      // Later passes compare against the first pass's score, so it is measured even for one candidate.
      scored = c_.sensitivity_passes > 1 || c_.knapsack_width_weights.size() > 1 || head_options().size() > 1;
      idx = knapsack_candidates(argmax, predict, scored);
      for (int pass = 2; pass <= c_.sensitivity_passes; ++pass)
        if (!refine_pass(pass, argmax, predict, idx)) break;
    } else if (c_.fit_target && res_.argmax_predicted_ms > res_.target_ms) {
      res_.fit_changes = fit_to_target(idx, net_->log_probs(), net_->choices(), predict, res_.target_ms);
      const double fitted = predict(idx);
      spdlog::info("fit_target: argmax architecture {:.3f} ms > target {:.3f} ms; {} choice changes -> {:.3f} ms",
                   res_.argmax_predicted_ms, res_.target_ms, res_.fit_changes, fitted);
      if (fitted > res_.target_ms)
        spdlog::warn("fit_target: no remaining choice is faster; the result misses the target by {:.1f}% (sequential "
                     "mode keeps phase 1's widths: a lower width target or more steps may help)",
                     100.0 * (fitted / res_.target_ms - 1.0));
    }
    Arch& a = res_.arch;
    a = net_->to_arch(idx, imp_, base_);
    a.group_size = c_.space.group_size;
    if (head_searched()) a.lm_head_bits = head_bits_;  // the chosen candidate's (set_head_bits)
    res_.predicted_ms = lut_.predict_ms(a, M());
    a.predicted_latency_ms = res_.predicted_ms;
    a.predicted_tokens = M();
    a.predicted_size_bytes = lut_.weight_bytes(a);
    a.alphas_json = net_->alphas_json();
    net_->set_fixed(idx);
    if (!scored) res_.valid_ppl = dp_perplexity(*model_, data_.valid);
  }

  // schedule.sensitivity_passes: every option's KL measured again around `idx` (the architecture
  // chosen so far, valid ppl res_.valid_ppl), the logits set from it, the knapsack candidates solved
  // again; the answer replaces idx only when its valid perplexity is lower. False: not kept.
  bool refine_pass(int pass, const std::vector<ChoiceIndex>& argmax,
                   const std::function<double(const std::vector<ChoiceIndex>&)>& predict,
                   std::vector<ChoiceIndex>& idx) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto [batch, teach] = sensitivity_batch();
    const auto kl = choice_kl(*net_, *model_, batch, teach, opts_.progress, &idx);
    if (dp_.is_root())
      write_file_atomic(path_join(opts_.out_dir, fmt::format("sensitivity-pass{}.json", pass)),
                        sensitivity_json(kl, net_->choices()));
    const auto alphas = net_->log_probs();
    const auto candidates = res_.candidates;
    const double before = res_.valid_ppl;
    const int head_before = head_bits_;
    net_->set_alphas(alphas_from_kl(kl, net_->choices(), c_.init_scale));
    std::vector<ChoiceIndex> next = knapsack_candidates(argmax, predict, /*score=*/true);
    const bool keep = res_.valid_ppl < before && count_changes(next, idx) > 0;
    spdlog::info("sensitivity pass {}: KL around the chosen architecture measured in {:.1f} s; its knapsack: {} "
                 "choices changed, valid ppl {:.3f} ({:.3f} before): {}",
                 pass, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                 count_changes(next, idx), res_.valid_ppl, before, keep ? "kept" : "not kept");
    res_.passes.push_back({pass, res_.valid_ppl, keep});
    if (!keep) {
      net_->set_alphas(alphas);
      res_.candidates = candidates;
      res_.valid_ppl = before;
      set_head_bits(head_before);
      return false;
    }
    idx = next;
    return true;
  }

  // The sensitivity's calibration: the first sequence of the first valid batch and the original's
  // logits on it.
  std::pair<at::Tensor, at::Tensor> sensitivity_batch() {
    LLMC_CHECK(teacher_, "{}: schedule.init \"sensitivity\" needs distillation (schedule.distill true)", c_.path);
    // Data parallel: the steps cache each rank's share of a batch in teach_valid_, not this whole batch.
    at::Tensor whole;
    const at::Tensor teach =
        teacher_logits(data_.valid[0], dp_.active() ? &whole : &teach_valid_[0]).narrow(0, 0, 1);
    return {data_.valid[0].narrow(0, 0, 1), teach};
  }

  // One knapsack per schedule.knapsack_width_weights. With `score`, each distinct answer is fixed and
  // scored on the valid split and the lowest perplexity wins (res_.valid_ppl is its score); without,
  // the one answer is returned unscored.
  // The summed single-option KL the knapsack minimizes treats choices as independent; a width cut
  // measured alone on the 16-bit model costs more beside quantized neighbours, and the weights let
  // the measurement, not the additive model, settle how much width to trade for bits.
  // With space.lm_head_bits, one knapsack per lm_head width and width weight: each at the target
  // less what that lm_head costs, scored with the lm_head fake-quantized as export will pack it (a
  // 4-bit head frees ~1/3 of a 4-bit SmolLM2's bytes for the layers; whether that pays is measured).
  std::vector<ChoiceIndex> knapsack_candidates(const std::vector<ChoiceIndex>& argmax,
                                               const std::function<double(const std::vector<ChoiceIndex>&)>& predict,
                                               bool score) {
    const auto lp = net_->log_probs();
    std::vector<std::vector<ChoiceIndex>> archs;
    std::vector<bool> met;
    res_.candidates.clear();
    for (int head : head_options())
      for (double w : c_.knapsack_width_weights) {
        const double dh = head_delta_ms(head);
        auto with_head = [&](const std::vector<ChoiceIndex>& x) { return predict(x) + dh; };
        const KnapsackResult k = knapsack_fit(lp, net_->choices(), with_head, res_.target_ms, argmax, w);
        add_candidate(archs, met, k.idx, head, k.ms, k.met, w);
      }
    if (score) add_uniform_candidates(predict, archs, met);
    // Candidates that miss the target are dropped when another one meets it (an lm_head too slow
    // for the target leaves its knapsack at the fastest layers).
    if (std::find(met.begin(), met.end(), true) != met.end()) {
      size_t n = 0;
      for (size_t i = 0; i < archs.size(); ++i)
        if (met[i]) {
          archs[n] = archs[i];
          res_.candidates[n++] = res_.candidates[i];
        }
      archs.resize(n);
      res_.candidates.resize(n);
    } else {
      spdlog::warn("knapsack: the fastest architecture ({:.3f} ms) misses the target by {:.1f}%",
                   res_.candidates[0].predicted_ms, 100.0 * (res_.candidates[0].predicted_ms / res_.target_ms - 1.0));
    }
    size_t best = 0;
    if (score)
      for (size_t i = 0; i < archs.size(); ++i) {
        net_->set_fixed(archs[i]);
        SearchResult::Candidate& c = res_.candidates[i];
        if (head_searched()) set_head_bits(c.lm_head_bits);
        c.valid_ppl = dp_perplexity(*model_, data_.valid);
        spdlog::info("knapsack candidate {}/{} ({}{}): {:.3f} ms, {} layer parts cut, valid ppl {:.3f}", i + 1,
                     archs.size(),
                     c.width_weight == 0 ? fmt::format("uniform {}-bit", c.uniform_bits)
                     : c.uniform_bits    ? fmt::format("width weight {}: uniform {}-bit", c.width_weight, c.uniform_bits)
                                         : fmt::format("width weight {}", c.width_weight),
                     head_searched() ? fmt::format(", {}-bit lm_head", c.lm_head_bits) : std::string(),
                     c.predicted_ms, c.width_cuts, c.valid_ppl);
        if (c.valid_ppl < res_.candidates[best].valid_ppl) best = i;
      }
    res_.candidates[best].chosen = true;
    res_.valid_ppl = res_.candidates[best].valid_ppl;
    res_.fit_changes = count_changes(argmax, archs[best]);
    if (head_searched()) set_head_bits(res_.candidates[best].lm_head_bits);
    spdlog::info("knapsack: argmax architecture {:.3f} ms; the {} within the target {:.3f} ms: {:.3f} ms, {} choices "
                 "differ from argmax{}",
                 res_.argmax_predicted_ms, archs.size() > 1 ? "best candidate" : "most likely one", res_.target_ms,
                 res_.candidates[best].predicted_ms, res_.fit_changes,
                 head_searched() ? fmt::format(", {}-bit lm_head", head_bits_) : std::string());
    return archs[best];
  }

  // Appends the candidate x with the lm_head option `head` unless it is one already (the first
  // answer stays); its index either way.
  size_t add_candidate(std::vector<std::vector<ChoiceIndex>>& archs, std::vector<bool>& met,
                       const std::vector<ChoiceIndex>& x, int head, double ms, bool meets, double width_weight) {
    for (size_t i = 0; i < archs.size(); ++i)
      if (count_changes(archs[i], x) == 0 && res_.candidates[i].lm_head_bits == head_of(head)) return i;
    const std::vector<LayerChoices>& ch = net_->choices();
    SearchResult::Candidate c;
    c.width_weight = width_weight;
    c.lm_head_bits = head_of(head);
    c.predicted_ms = ms;
    for (size_t l = 0; l < x.size(); ++l)
      c.width_cuts += (ch[l].kv[x[l].kv] < base_.num_kv_heads) + (ch[l].mlp[x[l].mlp] < base_.intermediate_size);
    archs.push_back(x);
    met.push_back(meets);
    res_.candidates.push_back(c);
    return archs.size() - 1;
  }

  // Every uniform-bits architecture at full width (the widths phase 1 fixed, in sequential mode)
  // that meets the target, per lm_head option, joins the scored candidates (width weight 0; a
  // knapsack answer that is one is labelled): the knapsack sums single-option KLs, which can rate
  // cuts plus a few 8-bit linears above a plain uniform architecture that measures better, and a
  // search should never return something its own score puts below the uniform export a user gets
  // in a minute.
  void add_uniform_candidates(const std::function<double(const std::vector<ChoiceIndex>&)>& predict,
                              std::vector<std::vector<ChoiceIndex>>& archs, std::vector<bool>& met) {
    if (c_.mode == "width-only") return;
    const std::vector<LayerChoices>& ch = net_->choices();
    for (int b : ch.front().bits) {
      std::vector<ChoiceIndex> x = net_->widest();
      bool everywhere = true;  // b is an option of every layer
      for (size_t l = 0; l < x.size() && everywhere; ++l) {
        const auto it = std::find(ch[l].bits.begin(), ch[l].bits.end(), b);
        everywhere = it != ch[l].bits.end();
        if (everywhere) x[l].bits.fill(it - ch[l].bits.begin());
      }
      if (!everywhere) continue;
      const double layers_ms = predict(x);
      for (int head : head_options()) {
        const double ms = layers_ms + head_delta_ms(head);
        if (ms <= res_.target_ms) res_.candidates[add_candidate(archs, met, x, head, ms, true, 0)].uniform_bits = b;
      }
    }
  }

  // space.lm_head_bits is a choice of this search (not of width-only, which chooses no bits).
  bool head_searched() const { return !c_.space.lm_head_bits.empty() && c_.mode != "width-only"; }
  // The lm_head widths the knapsack tries: the space's when searched, else the LUT's own.
  std::vector<int> head_options() const {
    return head_searched() ? c_.space.lm_head_bits : std::vector<int>{lut_.lm_head_bits()};
  }
  // A candidate's lm_head_bits for the head option `bits`: 0 when the lm_head is not searched.
  int head_of(int bits) const { return head_searched() ? bits : 0; }
  // What a `bits` lm_head adds to a prediction without one (the LUT's own lm_head), ms.
  double head_delta_ms(int bits) const { return lut_.lm_head_extra_us(bits) / 1000.0; }
  double cheapest_head_ms() const {
    double d = 0;
    for (int b : head_options()) d = std::min(d, head_delta_ms(b));
    return d;
  }
  // The search model's lm_head (and a tied embedding: export stores one packed table) fake-quantized
  // to `bits` as export packs it (RTN, like every option the search prices); 16: the original's.
  void set_head_bits(int bits) {
    if (bits == head_bits_) return;
    auto& W = model_->weights();
    if (!head_dense_.defined()) head_dense_ = W.lm_head->dense_weight();
    const int g = effective_group(static_cast<int>(base_.hidden_size), c_.space.group_size);
    const at::Tensor w =
        bits == 16 ? head_dense_ : fake_quantize(head_dense_.to(at::kFloat), bits, g).to(head_dense_.scalar_type());
    W.lm_head = std::make_shared<DenseLinear>(w);
    if (base_.tie_word_embeddings) W.embed = w;
    head_bits_ = bits;
  }

  // arch.json and summary.json.
  void write_result() {
    if (!dp_.is_root()) return;  // rank 0 writes the outputs
    write_arch(res_.arch, path_join(opts_.out_dir, "arch.json"));
    ojson summary = {{"mode", c_.mode},
                     {"steps", c_.steps},
                     {"tokens", M()},
                     {"original_ms", res_.original_ms},
                     {"target_ms", res_.target_ms},
                     {"fastest_ms", res_.fastest_ms},
                     {"predicted_ms", res_.predicted_ms},
                     {"argmax_predicted_ms", res_.argmax_predicted_ms},
                     {"discretize", c_.discretize},
                     {"fit_target_changes", res_.fit_changes},
                     {"knapsack_candidates", candidates_json()},
                     {"sensitivity_passes", passes_json()},
                     {"lm_head_bits", res_.arch.lm_head_bits},
                     {"predicted_size_bytes", res_.arch.predicted_size_bytes},
                     {"original_size_bytes", lut_.weight_bytes(uniform_arch(base_, 16, c_.space.group_size))},
                     {"original_valid_ppl", res_.original_valid_ppl},
                     {"valid_ppl_discretized_fake_quant", res_.valid_ppl},
                     {"seconds_per_search_step", steps_timed_ ? step_seconds_sum_ / steps_timed_ : 0.0},
                     {"seconds_per_plain_fwd_bwd", plain_step_s_},
                     {"peak_rss_mib", peak_rss_mib()}};
    write_file_atomic(path_join(opts_.out_dir, "summary.json"), summary.dump(2) + "\n");
    spdlog::info("arch: {:.3f} ms predicted (target {:.3f}, original {:.3f}); valid ppl {:.3f} (original {:.3f})",
                 res_.predicted_ms, res_.target_ms, res_.original_ms, res_.valid_ppl, res_.original_valid_ppl);
  }

  SearchResult& result() { return res_; }

  ojson passes_json() const {
    ojson a = ojson::array();
    for (const auto& p : res_.passes) a.push_back({{"pass", p.pass}, {"valid_ppl", p.valid_ppl}, {"kept", p.kept}});
    return a;
  }

  ojson candidates_json() const {
    ojson a = ojson::array();
    for (const auto& c : res_.candidates)
      a.push_back({{"width_weight", c.width_weight},
                   {"uniform_bits", c.uniform_bits},
                   {"lm_head_bits", c.lm_head_bits},
                   {"predicted_ms", c.predicted_ms},
                   {"width_cuts", c.width_cuts},
                   {"valid_ppl", c.valid_ppl},
                   {"chosen", c.chosen}});
    return a;
  }

 private:
  int64_t M() const { return c_.target_tokens; }
  bool seq() const { return c_.mode == "sequential"; }

  // The configured table, else the run's own OUT/lut.json: read when it exists (never measured
  // again or replaced), measured and written there when it does not.
  LatencyTable load_or_build_lut() {
    const std::string path = search_lut_path(c_, opts_.out_dir);
    const bool own = c_.lut.empty();
    if (!file_exists(path)) {
      LutOptions lo;
      lo.tokens = c_.lut_tokens;
      if (std::find(lo.tokens.begin(), lo.tokens.end(), M()) == lo.tokens.end()) lo.tokens.push_back(M());
      lo.context = c_.lut_context;
      lo.lm_head_bits = c_.lut_lm_head_bits;
      lo.repeats = c_.lut_repeats;
      lo.progress = opts_.progress;
      spdlog::info("lut: {} not found, measuring it now", path);
      write_file_atomic(path, build_lut_json(base_, c_.space, lo));
    } else if (own) {
      spdlog::info("lut: reading this run's own {}", path);
    }
    LatencyTable lut = LatencyTable::load(path);
    lut.check(base_, c_.space, c_.path);
    if (own && !opts_.resume) {  // measured by an earlier run here: it must be what this config would measure
      const auto& t = lut.tokens();
      if (lut.context() != c_.lut_context || lut.lm_head_bits() != c_.lut_lm_head_bits ||
          std::find(t.begin(), t.end(), M()) == t.end())
        fail("{}: measured with context {} and lm_head_bits {} for tokens {}, the config asks for context {}, "
             "lm_head_bits {} and {} token(s); remove the file to measure it again, or name a table in 'lut'",
             path, lut.context(), lut.lm_head_bits(), fmt::join(t, ","), c_.lut_context, c_.lut_lm_head_bits, M());
      if (lut.kernel_version().rfind(std::string(kLutKernelVersion) + " ", 0) != 0)
        fail("{}: measured with kernels '{}', this build's are '{}'; remove the file to measure it again", path,
             lut.kernel_version(), kLutKernelVersion);
    }
    if (fingerprint_.empty()) fingerprint_ = search_fingerprint(c_, path);
    return lut;
  }

  // Data-free calibration (as in LLM-QAT): text the model samples itself, from BOS; the same
  // batched sampler export uses, on the runtime engine (no per-op libtorch dispatch per token).
  at::Tensor sampled_sequences(int64_t n) {
    spdlog::info("data: sampling {} sequences of {} tokens from the model (data-free calibration)", n, c_.seq_len);
    CalibOptions co;
    co.source = "generate";
    co.samples = n;
    co.seq_len = c_.seq_len;
    co.seed = c_.seed;
    auto sampler = make_runtime(*model_);
    return calibration_tokens(*sampler, co).contiguous();
  }

  at::Tensor text_sequences(int64_t n) {
    const size_t need = static_cast<size_t>(n * c_.seq_len);
    std::vector<int32_t> stream;
    TokenStreamOptions so;
    so.boundary = DocBoundary::TokenizerDefault;
    so.max_tokens = need;
    std::vector<std::vector<TextDocument>> per_source;
    for (const auto& src : c_.data_sources) per_source.push_back(data_source_documents(c_, src));
    append_documents(stream, model_->tokenizer(), interleave_documents(std::move(per_source)), so);
    if (stream.size() < need)
      fail("{}: data has {} tokens, the config needs {} ((train_sequences + valid_sequences) x seq_len)", c_.path,
           stream.size(), need);
    return cut_sequences(stream, n, c_.seq_len);
  }

  // Forward + backward of the original model on one valid batch, with gradients for all its
  // weights (what a plain fine-tuning step costs): the baseline of the step-time ratio.
  double plain_step_seconds() {
    std::vector<at::Tensor> ws;
    for (auto& L : model_->weights().layers)
      for (auto* lin : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) ws.push_back((*lin)->dense_weight());
    for (auto& w : ws) w.set_requires_grad(true);
    double best = 0;
    for (int rep = 0; rep < 3; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      double w = 0;
      const at::Tensor part = dp_.shard_rows(data_.valid[0], &w, "the first valid batch");
      next_token_cross_entropy(model_->forward(part), part).backward();
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = rep == 0 ? s : std::min(best, s);
    }
    for (auto& w : ws) {
      w.mutable_grad() = at::Tensor();
      w.set_requires_grad(false);
    }
    return best;
  }

  std::unique_ptr<Supernet> make_net(int phase) {
    std::vector<LayerChoices> ch;
    if (c_.mode == "joint") ch = make_choices(base_, c_.space, true, true);
    else if (c_.mode == "width-only" || (seq() && phase == 1)) ch = make_choices(base_, c_.space, true, false);
    else ch = make_choices(base_, c_.space, false, true);
    if (seq() && phase == 2)
      for (size_t l = 0; l < ch.size(); ++l) {
        ch[l].kv = {ps_.kv_fixed[l]};
        ch[l].mlp = {ps_.mlp_fixed[l]};
      }
    return std::make_unique<Supernet>(*model_, ch, lat_, c_.space.group_size, c_.lora_rank, c_.seed + phase);
  }

  // schedule.init = "sensitivity": the logits start from each option's KL alone (sensitivity.h),
  // measured on the first sequence of the first valid batch against the original's logits.
  void init_alphas() {
    if (c_.init != "sensitivity") return;
    // Phase 1 (the whole search but sequential's bit phase) starts from the widest architecture of
    // the config's space: the values of a shared measurement (SearchOptions::sensitivity_cache) apply.
    const bool shared = !opts_.sensitivity_cache.empty() && ps_.phase == 1;
    std::vector<ChoiceLogProbs> kl;
    if (shared && file_exists(opts_.sensitivity_cache) &&
        read_sensitivity(opts_.sensitivity_cache, net_->choices(), &kl)) {
      spdlog::info("sensitivity: KL values read from {}", opts_.sensitivity_cache);
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      const auto [batch, teach] = sensitivity_batch();
      kl = choice_kl(*net_, *model_, batch, teach, opts_.progress);
      spdlog::info("sensitivity: KL of every option measured in {:.1f} s",
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const std::string text = sensitivity_json(kl, net_->choices());
    if (dp_.is_root()) {
      write_file_atomic(path_join(opts_.out_dir, "sensitivity.json"), text);
      if (shared && !file_exists(opts_.sensitivity_cache)) write_file_atomic(opts_.sensitivity_cache, text);
    }
    net_->set_alphas(alphas_from_kl(kl, net_->choices(), c_.init_scale));
  }

  [[noreturn]] void fail_unreachable() const {
    fail("{}: target {:.3f} ms is below the fastest architecture in the search space ({:.3f} ms at {} tokens)",
         c_.path, res_.target_ms, res_.fastest_ms, M());
  }

  double phase_target(int phase) const {
    if (!(seq() && phase == 1)) return res_.target_ms;
    // Width search at 16 bits aims where the later bit search (at ~mid bits) reaches the target.
    const double ratio =
        res_.original_ms / lut_.predict_ms(uniform_arch(base_, c_.sequential_mid_bits, c_.space.group_size), M());
    return std::min(res_.original_ms, res_.target_ms * ratio);
  }

  // Sequential: phase 1's argmax widths (with discretize "knapsack": the most likely widths that
  // meet phase 1's target) become phase 2's fixed widths.
  void fix_widths() {
    auto idx = net_->argmax();
    if (c_.discretize == "knapsack") {
      auto predict = [&](const std::vector<ChoiceIndex>& x) {
        Arch a = arch_of_choices(x, net_->choices(), base_);
        a.group_size = c_.space.group_size;
        return lut_.predict_ms(a, M());
      };
      const KnapsackResult k = knapsack_fit(net_->log_probs(), net_->choices(), predict, phase_target(1), idx);
      spdlog::info("sequential: phase 1 knapsack {:.3f} ms (target {:.3f} ms), {} choices differ from argmax", k.ms,
                   phase_target(1), count_changes(idx, k.idx));
      idx = k.idx;
    }
    ps_.phase = 2;
    ps_.kv_fixed.clear();
    ps_.mlp_fixed.clear();
    for (size_t l = 0; l < idx.size(); ++l) {
      ps_.kv_fixed.push_back(net_->choices()[l].kv[idx[l].kv]);
      ps_.mlp_fixed.push_back(net_->choices()[l].mlp[idx[l].mlp]);
    }
    spdlog::info("sequential: widths fixed after phase 1; bit search on the subnet");
  }

  // The teacher is frozen and the batches repeat, so its logits are computed once per batch (for
  // every phase) and kept while those the steps use (valid; train too with LoRA weight steps) fit
  // in kTeacherCacheBytes. The same values: results are unchanged.
  void prepare_teacher_cache() {
    constexpr double kTeacherCacheBytes = 2.0 * (1ull << 30);
    const size_t used_batches = data_.valid.size() + (c_.lora_rank > 0 ? data_.train.size() : 0);
    cache_teacher_ = teacher_ && static_cast<double>(used_batches) * c_.batch_size * c_.seq_len *
                                         base_.vocab_size * 4.0 <= kTeacherCacheBytes;
    teach_train_.assign(data_.train.size(), at::Tensor());
    teach_valid_.assign(data_.valid.size(), at::Tensor());
  }

  at::Tensor teacher_logits(const at::Tensor& batch, at::Tensor* slot) {
    if (!teacher_) return at::Tensor();
    if (cache_teacher_ && slot->defined()) return *slot;
    at::NoGradGuard ng;
    at::Tensor t = teacher_->forward(batch);
    if (cache_teacher_) *slot = t;
    return t;
  }

  // Steps [first, last) of one phase; false when stopped (checkpoint written).
  bool run_phase(int phase, int64_t first, int64_t last, bool restore) {
    if (first >= last) return true;  // schedule.steps 0: the initial logits are discretized as they are
    g_in_steps.store(true);
    struct Leave {
      ~Leave() { g_in_steps.store(false); }
    } leave;
    Adam arch_opt(net_->arch_parameters(), c_.arch_lr, AdamRounding::Search);
    arch_opt.set_plain_sgd(c_.arch_optimizer == "sgd");
    std::unique_ptr<Adam> w_opt;
    if (c_.lora_rank > 0) w_opt = std::make_unique<Adam>(net_->weight_parameters(), c_.weight_lr, AdamRounding::Search);
    if (restore) {
      restore_tensors(ck_.dir, *net_, arch_opt, w_opt.get());
      arch_opt.set_steps(ck_.arch_t);
      if (w_opt) w_opt->set_steps(ck_.w_t);
    }
    sync_from_root(arch_opt, w_opt.get());
    const double T = phase_target(phase);
    auto t0 = std::chrono::steady_clock::now();
    Progress bar(seq() ? fmt::format("search phase {}", phase) : "search", last - first, "step");
    for (int64_t step = first; step < last; ++step) {
      search_step(phase, step, T, arch_opt, w_opt.get(), bar);
      // A signal may reach the ranks at different steps: they stop together when any got one.
      const bool stop = dp_.all_reduce_sum({g_stop.load() ? 1.0 : 0.0}, "the stop flag")[0] > 0;
      if (dp_.is_root() &&
          (stop || (c_.checkpoint_every > 0 && (step + 1) % c_.checkpoint_every == 0) || step + 1 == last))
        save_checkpoint(opts_.out_dir, *net_, arch_opt, w_opt.get(), step + 1, rng_, ps_, fingerprint_);
      res_.steps_done = step + 1;
      step_seconds_sum_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      t0 = std::chrono::steady_clock::now();
      ++steps_timed_;
      if (stop) {
        if (dp_.is_root())
          spdlog::warn("stopped at step {}; checkpoint written to {}/checkpoint (continue with --resume)", step + 1,
                       opts_.out_dir);
        return false;
      }
    }
    return true;
  }

  // One step: a LoRA weight step on the train split (lora_rank > 0), then an architecture step on
  // the valid split with the hinge latency loss lambda * max(0, E[lat]/T - 1); logs one row.
  void search_step(int phase, int64_t step, double T, Adam& arch_opt, Adam* w_opt, Progress& bar) {
    const double frac = c_.steps > 1 ? static_cast<double>(step) / (c_.steps - 1) : 1.0;
    const double tau = c_.tau_start * std::pow(c_.tau_end / c_.tau_start, frac);
    const size_t ti = step % data_.train.size(), vi = step % data_.valid.size();
    // Data parallel: this rank's rows of the global batches, its mean loss weighted by its share
    // (the weighted losses sum to the global batch's mean), gradients summed over ranks.
    double tw = 1, vw = 1;
    const at::Tensor tb = dp_.shard_rows(data_.train[ti], &tw, "a train batch (batch_size)");
    const at::Tensor vb = dp_.shard_rows(data_.valid[vi], &vw, "a valid batch (batch_size)");
    if (w_opt) {
      net_->sample(tau, c_.hard, rng_);
      check_same_draws("the weight step's Gumbel noise");
      (tw * task_loss(model_->forward(tb), tb, teacher_logits(tb, &teach_train_[ti]))).backward();
      dp_.all_reduce_grads(w_opt->params(), "the LoRA gradients");
      w_opt->step();
      w_opt->zero_grad();
      arch_opt.zero_grad();
    }
    net_->sample(tau, c_.hard, rng_);
    check_same_draws("the architecture step's Gumbel noise");
    const at::Tensor teach = teacher_logits(vb, &teach_valid_[vi]);
    auto lt = task_loss(model_->forward(vb), vb, teach);
    auto elat = net_->expected_latency_ms();
    auto ll = c_.lambda * at::relu(elat / T - 1.0);
    // The latency loss is the same on every rank: each adds 1/world of it.
    if (dp_.active()) (vw * lt + ll / dp_.world_size()).backward();
    else (lt + ll).backward();
    dp_.all_reduce_grads(arch_opt.params(), "the architecture gradients");
    arch_opt.step();
    arch_opt.zero_grad();
    if (w_opt) w_opt->zero_grad();
    const double e = elat.item<double>();
    const double task = dp_.active() ? dp_.all_reduce_sum({vw * lt.item<double>()}, "the task loss")[0]
                                     : lt.item<double>();
    ojson row = {{"step", step + 1}, {"phase", phase}, {"task_loss", task},
                 {"latency_loss", ll.item<double>()}, {"expected_latency_ms", e}, {"target_ms", T},
                 {"tau", tau}, {"mean_entropy", net_->mean_entropy()}};
    if (dp_.is_root()) log_.write_line(row.dump());
    bar.advance(1, fmt::format("loss {:.4f} lat {:.3f}/{:.3f} ms", task, e, T));
    if (opts_.on_step) opts_.on_step(step + 1);
  }

  // Data parallel: every rank starts a phase from rank 0's logits, LoRA weights and optimizer
  // moments (the same values by construction; this makes it so whatever the files each rank read).
  void sync_from_root(Adam& arch_opt, Adam* w_opt) {
    if (!dp_.active()) return;
    std::vector<at::Tensor> ts;
    for (const auto& [name, t] : net_->state()) ts.push_back(t);
    for (const auto& [name, t] : arch_opt.state("a")) ts.push_back(t);
    if (w_opt)
      for (const auto& [name, t] : w_opt->state("w")) ts.push_back(t);
    dp_.broadcast(ts, "the supernet state");
  }

  // Every rank draws the Gumbel noise from the same seeded generator: after a draw the generators'
  // states agree, else the ranks would train different architectures (checked every step).
  void check_same_draws(const std::string& what) {
    if (!dp_.active()) return;
    const uint64_t h = std::hash<std::string>{}(rng_state(rng_));
    dp_.check_same(static_cast<double>(h >> 11), what);
  }

  DataParallel& dp_ = DataParallel::get();
  const SearchConfig& c_;
  const SearchOptions& opts_;
  std::unique_ptr<Llama> model_, teacher_;
  ModelConfig base_;
  LatencyTable lut_;
  LatencyLookup lat_;
  Data data_;
  Importance imp_;
  SearchResult res_;
  double plain_step_s_ = 0, step_seconds_sum_ = 0;
  int64_t steps_timed_ = 0, start_step_ = 0;
  PhaseState ps_;
  std::mt19937_64 rng_{c_.seed};  // the Gumbel draws (was always 0: schedule.seed 0 runs are unchanged)
  SearchCheckpointMeta ck_;
  std::string fingerprint_;
  AppendFile log_;
  std::unique_ptr<Supernet> net_;
  bool cache_teacher_ = false;
  std::vector<at::Tensor> teach_train_, teach_valid_;
  int head_bits_ = 16;       // the search model's lm_head as set_head_bits left it (16: the original's)
  at::Tensor head_dense_;    // the original lm_head weight, once set_head_bits replaced it
};

}  // namespace

void request_search_stop() { g_stop.store(true); }

void install_search_signal_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

SearchResult run_search(const SearchConfig& c, const SearchOptions& opts) {
  g_stop.store(false);
  // Data parallel (finetune/dist.h): rank 0 owns OUT (its lock, the LUT it may measure, every
  // output and checkpoint); the other ranks read OUT (one machine, or a shared file system) after
  // rank 0 has prepared it.
  DataParallel& dp = DataParallel::get();
  std::unique_ptr<FileLock> lock;
  if (dp.is_root()) lock = claim_search_out(opts.out_dir, opts.force);  // held for the whole run
  Search s(c, opts);
  if (!dp.is_root()) dp.barrier("waiting for rank 0 to prepare the output folder and latency table");
  s.check_resume();
  s.load_model_and_latency();
  if (dp.is_root()) dp.barrier("waiting for rank 0 to prepare the output folder and latency table");
  s.prepare_data();
  s.measure_original();
  // After measure_original: its forward + backward over every linear would otherwise run beside a
  // second fp32 copy of the model (the peak RSS of a 1B search, docs/lean-supernet.md).
  s.load_teacher();
  s.permute_by_importance();
  s.set_target();
  s.start_or_resume();
  s.build_supernet();
  if (!s.run_phases()) {
    s.result().interrupted = true;
    return s.result();
  }
  s.discretize();
  s.write_result();
  return s.result();
}

}  // namespace llmc
