#include "llmc/nas/search.h"

#include <ATen/ATen.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <fstream>
#include <sstream>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/log.h"
#include "llmc/core/progress.h"
#include "llmc/data/text_docs.h"
#include "llmc/data/calibration.h"
#include "llmc/io/safetensors.h"
#include "llmc/latency/lut.h"
#include "llmc/model/load.h"
#include "llmc/nas/importance.h"
#include "llmc/nas/supernet.h"
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
  static const char msg[] = "\nsearch: interrupted before the first step; nothing to checkpoint\n";
  ssize_t ignored = ::write(2, msg, sizeof msg - 1);
  (void)ignored;
  ::_exit(128 + sig);
}

// Adam with explicit state so a checkpoint restores it exactly.
struct Adam {
  std::vector<at::Tensor> params, m, v;
  double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  int64_t t = 0;
  Adam(std::vector<at::Tensor> p, double lr_) : params(std::move(p)), lr(lr_) {
    for (auto& x : params) {
      m.push_back(at::zeros_like(x).detach());
      v.push_back(at::zeros_like(x).detach());
    }
  }
  void step() {
    at::NoGradGuard ng;
    ++t;
    const double c1 = 1 - std::pow(b1, t), c2 = 1 - std::pow(b2, t);
    for (size_t i = 0; i < params.size(); ++i) {
      auto g = params[i].grad();
      if (!g.defined()) continue;
      m[i].mul_(b1).add_(g, 1 - b1);
      v[i].mul_(b2).addcmul_(g, g, 1 - b2);
      params[i].sub_(lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps));
    }
  }
  void zero_grad() {
    for (auto& p : params)
      if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  }
};

struct Data {
  std::vector<at::Tensor> train, valid;  // (B, T) int64 batches
};

Data build_data(const SearchConfig& c, Llama& model) {
  const Tokenizer& tok = model.tokenizer();
  const int64_t need = (c.train_sequences + c.valid_sequences) * c.seq_len;
  std::vector<int32_t> stream;
  if (c.data_sources.empty()) {
    // Data-free calibration (as in LLM-QAT): text the model samples itself, from BOS; the same
    // batched sampler export uses, on the runtime engine (no per-op libtorch dispatch per token).
    spdlog::info("data: sampling {} sequences of {} tokens from the model (data-free calibration)",
                 c.train_sequences + c.valid_sequences, c.seq_len);
    CalibOptions co;
    co.source = "generate";
    co.samples = c.train_sequences + c.valid_sequences;
    co.seq_len = c.seq_len;
    co.seed = c.seed;
    auto sampler = make_runtime(model);
    const at::Tensor toks = calibration_tokens(*sampler, co).contiguous();
    stream.assign(toks.data_ptr<int64_t>(), toks.data_ptr<int64_t>() + toks.numel());
  } else {
    for (const auto& src : c.data_sources) {
      for (const auto& d : load_text_docs(src.substr(5))) {
        auto ids = tok.encode(d.text, tok.add_bos_default());
        if (!tok.add_bos_default() && tok.eos_id() >= 0 && !stream.empty()) stream.push_back(tok.eos_id());
        stream.insert(stream.end(), ids.begin(), ids.end());
        if (static_cast<int64_t>(stream.size()) >= need) break;
      }
      if (static_cast<int64_t>(stream.size()) >= need) break;
    }
  }
  if (static_cast<int64_t>(stream.size()) < need)
    fail("{}: data has {} tokens, the config needs {} ((train_sequences + valid_sequences) x seq_len)", c.path,
         stream.size(), need);
  Data d;
  auto batches = [&](int64_t first_seq, int64_t n_seq, std::vector<at::Tensor>* out) {
    for (int64_t s = 0; s < n_seq; s += c.batch_size) {
      const int64_t b = std::min(c.batch_size, n_seq - s);
      auto t = at::empty({b, c.seq_len}, at::kLong);
      auto acc = t.accessor<int64_t, 2>();
      for (int64_t i = 0; i < b; ++i)
        for (int64_t j = 0; j < c.seq_len; ++j) acc[i][j] = stream[(first_seq + s + i) * c.seq_len + j];
      out->push_back(t);
    }
  };
  batches(0, c.train_sequences, &d.train);
  batches(c.train_sequences, c.valid_sequences, &d.valid);
  return d;
}

// Mean next-token cross-entropy, or KL(teacher || student) per position when teacher is given.
at::Tensor task_loss(const at::Tensor& logits, const at::Tensor& tokens, const at::Tensor& teacher_logits) {
  const int64_t V = logits.size(-1);
  if (teacher_logits.defined()) {
    auto lp = at::log_softmax(logits, -1), tp = at::log_softmax(teacher_logits, -1);
    return (tp.exp() * (tp - lp)).sum(-1).mean();
  }
  auto lp = at::log_softmax(logits.narrow(1, 0, logits.size(1) - 1), -1).reshape({-1, V});
  auto tgt = tokens.narrow(1, 1, tokens.size(1) - 1).reshape({-1});
  return at::nll_loss(lp, tgt);
}

double perplexity(CausalLM& m, const std::vector<at::Tensor>& batches) {
  at::NoGradGuard ng;
  double nll = 0;
  int64_t n = 0;
  for (const auto& b : batches) {
    auto l = task_loss(m.forward(b), b, at::Tensor());
    const int64_t k = b.size(0) * (b.size(1) - 1);
    nll += l.item<double>() * k;
    n += k;
  }
  return std::exp(nll / std::max<int64_t>(1, n));
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

std::string config_fingerprint(const SearchConfig& c) {
  return fmt::format("{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}", c.model, c.space.canonical_json(), c.steps, c.arch_lr,
                     c.weight_lr, c.lora_rank, c.lambda, c.tau_start, c.tau_end, c.seed, c.mode, c.seq_len);
}

void save_checkpoint(const std::string& out, const Supernet& net, const Adam& arch_opt, const Adam* w_opt,
                     int64_t step, const std::mt19937_64& rng, const PhaseState& ps, const SearchConfig& c) {
  const std::string dir = path_join(out, "checkpoint"), tmp = path_join(out, "checkpoint.tmp");
  remove_tree(tmp);
  make_dirs(tmp);
  std::vector<at::Tensor> keep;
  std::vector<TensorToWrite> ts;
  auto add = [&](const std::string& name, const at::Tensor& t) {
    keep.push_back(t.detach().to(at::kFloat).contiguous());
    ts.push_back({name, DType::F32, keep.back().sizes().vec(), keep.back().data_ptr()});
  };
  for (const auto& [name, t] : net.state()) add(name, t);
  for (size_t i = 0; i < arch_opt.params.size(); ++i) {
    add(fmt::format("adam_arch.m.{}", i), arch_opt.m[i]);
    add(fmt::format("adam_arch.v.{}", i), arch_opt.v[i]);
  }
  if (w_opt)
    for (size_t i = 0; i < w_opt->params.size(); ++i) {
      add(fmt::format("adam_w.m.{}", i), w_opt->m[i]);
      add(fmt::format("adam_w.v.{}", i), w_opt->v[i]);
    }
  write_safetensors(path_join(tmp, "state.safetensors"), ts);
  ojson j = {{"step", step},
             {"rng", rng_state(rng)},
             {"adam_arch_t", arch_opt.t},
             {"adam_w_t", w_opt ? w_opt->t : 0},
             {"phase", ps.phase},
             {"kv_fixed", ps.kv_fixed},
             {"mlp_fixed", ps.mlp_fixed},
             {"config", config_fingerprint(c)}};
  write_file_atomic(path_join(tmp, "state.json"), j.dump(1));
  // A complete checkpoint exists at every instant: the old one moves aside, the new one into place,
  // and only then is the old one removed (a kill in between leaves checkpoint.old to resume from).
  const std::string old = path_join(out, "checkpoint.old");
  remove_tree(old);
  if (dir_exists(dir)) rename_path(dir, old);
  rename_path(tmp, dir);
  remove_tree(old);
}

// The checkpoint folder to resume from: checkpoint/, or checkpoint.old/ when a save was killed
// between its two renames.
std::string checkpoint_dir(const std::string& out) {
  const std::string dir = path_join(out, "checkpoint"), old = path_join(out, "checkpoint.old");
  return !dir_exists(dir) && dir_exists(old) ? old : dir;
}

struct Loaded {
  int64_t step = 0;
  std::string rng;
  int64_t arch_t = 0, w_t = 0;
  PhaseState ps;
};

Loaded read_checkpoint_meta(const std::string& out, const SearchConfig& c) {
  const std::string p = path_join(checkpoint_dir(out), "state.json");
  if (!file_exists(p)) fail("{}: no checkpoint to resume from", p);
  ojson j;
  try {
    j = ojson::parse(read_text_file(p));
    Loaded l;
    if (j.at("config").get<std::string>() != config_fingerprint(c))
      fail("{}: checkpoint was made with a different config; start a new --out or drop --resume", p);
    l.step = j.at("step");
    l.rng = j.at("rng");
    l.arch_t = j.at("adam_arch_t");
    l.w_t = j.at("adam_w_t");
    l.ps.phase = j.at("phase");
    l.ps.kv_fixed = j.at("kv_fixed").get<std::vector<int64_t>>();
    l.ps.mlp_fixed = j.at("mlp_fixed").get<std::vector<int64_t>>();
    return l;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: corrupt checkpoint ({})", p, e.what());
  }
}

void restore_tensors(const std::string& out, Supernet& net, Adam& arch_opt, Adam* w_opt) {
  const std::string p = path_join(checkpoint_dir(out), "state.safetensors");
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
  for (size_t i = 0; i < arch_opt.params.size(); ++i) {
    load(fmt::format("adam_arch.m.{}", i), arch_opt.m[i]);
    load(fmt::format("adam_arch.v.{}", i), arch_opt.v[i]);
  }
  if (w_opt)
    for (size_t i = 0; i < w_opt->params.size(); ++i) {
      load(fmt::format("adam_w.m.{}", i), w_opt->m[i]);
      load(fmt::format("adam_w.v.{}", i), w_opt->v[i]);
    }
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

}  // namespace

void request_search_stop() { g_stop.store(true); }

void install_search_signal_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

SearchResult run_search(const SearchConfig& c, const SearchOptions& opts) {
  g_stop.store(false);
  make_dirs(opts.out_dir);
  auto model = load_llama(c.model);
  const ModelConfig base = model->config();
  const int64_t M = c.target_tokens;

  // Latency table: the configured file, or built now for this model and space.
  std::string lut_path = c.lut;
  if (lut_path.empty() || !file_exists(lut_path)) {
    if (lut_path.empty()) lut_path = path_join(opts.out_dir, "lut.json");
    LutOptions lo;
    lo.tokens = c.lut_tokens;
    if (std::find(lo.tokens.begin(), lo.tokens.end(), M) == lo.tokens.end()) lo.tokens.push_back(M);
    lo.context = c.lut_context;
    lo.lm_head_bits = c.lut_lm_head_bits;
    lo.progress = opts.progress;
    spdlog::info("lut: {} not found, measuring it now", lut_path);
    write_file_atomic(lut_path, build_lut_json(base, c.space, lo));
  }
  LatencyTable lut = LatencyTable::load(lut_path);
  lut.check(base, c.space, c.path);
  LatencyLookup lat = lookup_from(lut, M);

  Data data = build_data(c, *model);
  spdlog::info("data: {} train and {} valid batches of {}x{}", data.train.size(), data.valid.size(), c.batch_size,
               c.seq_len);
  // Teacher: the original model (the permutation below does not change its function).
  std::unique_ptr<Llama> teacher = c.distill ? load_llama(c.model) : nullptr;
  SearchResult res;
  res.original_valid_ppl = perplexity(*model, data.valid);

  // Baseline for the step-time ratio: forward + backward of the original model on one valid batch,
  // with gradients for all its weights (what a plain fine-tuning step costs).
  double plain_step_s = 0;
  {
    std::vector<at::Tensor> ws;
    for (auto& L : model->weights().layers)
      for (auto* lin : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) ws.push_back((*lin)->dense_weight());
    for (auto& w : ws) w.set_requires_grad(true);
    for (int rep = 0; rep < 3; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      task_loss(model->forward(data.valid[0]), data.valid[0], at::Tensor()).backward();
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      plain_step_s = rep == 0 ? s : std::min(plain_step_s, s);
    }
    for (auto& w : ws) {
      w.mutable_grad() = at::Tensor();
      w.set_requires_grad(false);
    }
  }
  Importance imp = compute_importance(*model, {data.train.begin(), data.train.begin() + std::min<size_t>(4, data.train.size())});
  permute_model(*model, imp);

  const Arch full16 = uniform_arch(base, 16, c.space.group_size);
  res.original_ms = lut.predict_ms(full16, M);
  res.target_ms = c.target_ms > 0 ? c.target_ms : c.target_fraction * res.original_ms;

  // The phases: one for joint / width-only / bits-only, two for sequential.
  const bool seq = c.mode == "sequential";
  const int64_t steps1 = seq ? c.steps / 2 : c.steps;
  PhaseState ps;
  int64_t start_step = 0;
  std::mt19937_64 rng(c.seed);
  Loaded ck;
  if (opts.resume) {
    ck = read_checkpoint_meta(opts.out_dir, c);
    ps = ck.ps;
    start_step = ck.step;
    std::istringstream(ck.rng) >> rng;
    spdlog::info("resuming at step {} (phase {})", start_step, ps.phase);
  }
  std::ofstream log_file(path_join(opts.out_dir, "search_log.jsonl"), opts.resume ? std::ios::app : std::ios::trunc);

  std::unique_ptr<Supernet> net;
  auto make_net = [&](int phase) {
    std::vector<LayerChoices> ch;
    if (c.mode == "joint") ch = make_choices(base, c.space, true, true);
    else if (c.mode == "width-only" || (seq && phase == 1)) ch = make_choices(base, c.space, true, false);
    else ch = make_choices(base, c.space, false, true);
    if (seq && phase == 2)
      for (size_t l = 0; l < ch.size(); ++l) {
        ch[l].kv = {ps.kv_fixed[l]};
        ch[l].mlp = {ps.mlp_fixed[l]};
      }
    return std::make_unique<Supernet>(*model, ch, lat, c.space.group_size, c.lora_rank, c.seed + phase);
  };
  auto phase_target = [&](int phase) {
    if (!(seq && phase == 1)) return res.target_ms;
    // Width search at 16 bits aims where the later bit search (at ~mid bits) reaches the target.
    const double ratio = res.original_ms / lut.predict_ms(uniform_arch(base, c.sequential_mid_bits, c.space.group_size), M);
    return std::min(res.original_ms, res.target_ms * ratio);
  };

  net = make_net(ps.phase);
  {
    const double fastest = net->latency_ms(net->fastest());
    res.fastest_ms = fastest;
    if (!seq && res.target_ms < fastest)
      fail("{}: target {:.3f} ms is below the fastest architecture in the search space ({:.3f} ms at {} tokens)",
           c.path, res.target_ms, fastest, M);
    if (seq) {
      auto all = make_choices(base, c.space, true, true);
      Supernet probe(*model, all, lat, c.space.group_size, 0, 0, /*install=*/false);
      res.fastest_ms = probe.latency_ms(probe.fastest());
      if (res.target_ms < res.fastest_ms)
        fail("{}: target {:.3f} ms is below the fastest architecture in the search space ({:.3f} ms at {} tokens)",
             c.path, res.target_ms, res.fastest_ms, M);
    }
  }
  spdlog::info("search ({}): original {:.3f} ms, target {:.3f} ms, fastest possible {:.3f} ms at {} token(s)", c.mode,
               res.original_ms, res.target_ms, res.fastest_ms, M);

  double step_seconds_sum = 0;
  int64_t steps_timed = 0;
  // The teacher is frozen and the batches repeat, so its logits are computed once per batch (for
  // every phase) and kept while those the steps use (valid; train too with LoRA weight steps) fit
  // in kTeacherCacheBytes. The same values: results are unchanged.
  constexpr double kTeacherCacheBytes = 2.0 * (1ull << 30);
  const size_t used_batches = data.valid.size() + (c.lora_rank > 0 ? data.train.size() : 0);
  const bool cache_teacher = teacher && static_cast<double>(used_batches) * c.batch_size * c.seq_len *
                                                base.vocab_size * 4.0 <= kTeacherCacheBytes;
  std::vector<at::Tensor> teach_train(data.train.size()), teach_valid(data.valid.size());
  auto teacher_logits = [&](const at::Tensor& batch, at::Tensor* slot) {
    if (!teacher) return at::Tensor();
    if (cache_teacher && slot->defined()) return *slot;
    at::NoGradGuard ng;
    at::Tensor t = teacher->forward(batch);
    if (cache_teacher) *slot = t;
    return t;
  };
  auto run_phase = [&](int phase, int64_t first, int64_t last, bool restore) -> bool {
    g_in_steps.store(true);
    struct Leave {
      ~Leave() { g_in_steps.store(false); }
    } leave;
    Adam arch_opt(net->arch_parameters(), c.arch_lr);
    std::unique_ptr<Adam> w_opt;
    if (c.lora_rank > 0) w_opt = std::make_unique<Adam>(net->weight_parameters(), c.weight_lr);
    if (restore) {
      restore_tensors(opts.out_dir, *net, arch_opt, w_opt.get());
      arch_opt.t = ck.arch_t;
      if (w_opt) w_opt->t = ck.w_t;
    }
    const double T = phase_target(phase);
    auto phase_t0 = std::chrono::steady_clock::now();
    Progress bar(seq ? fmt::format("search phase {}", phase) : "search", last - first, "step");
    for (int64_t step = first; step < last; ++step) {
      const double frac = c.steps > 1 ? static_cast<double>(step) / (c.steps - 1) : 1.0;
      const double tau = c.tau_start * std::pow(c.tau_end / c.tau_start, frac);
      const auto& tb = data.train[step % data.train.size()];
      const auto& vb = data.valid[step % data.valid.size()];
      if (w_opt) {  // weight step (LoRA) on the train split
        net->sample(tau, c.hard, rng);
        const at::Tensor teach = teacher_logits(tb, &teach_train[step % data.train.size()]);
        task_loss(model->forward(tb), tb, teach).backward();
        w_opt->step();
        w_opt->zero_grad();
        arch_opt.zero_grad();
      }
      // Architecture step on the valid split.
      net->sample(tau, c.hard, rng);
      const at::Tensor teach = teacher_logits(vb, &teach_valid[step % data.valid.size()]);
      auto lt = task_loss(model->forward(vb), vb, teach);
      auto elat = net->expected_latency_ms();
      auto ll = c.lambda * at::relu(elat / T - 1.0);
      (lt + ll).backward();
      arch_opt.step();
      arch_opt.zero_grad();
      if (w_opt) w_opt->zero_grad();
      const double e = elat.item<double>();
      ojson row = {{"step", step + 1}, {"phase", phase}, {"task_loss", lt.item<double>()},
                   {"latency_loss", ll.item<double>()}, {"expected_latency_ms", e}, {"target_ms", T},
                   {"tau", tau}, {"mean_entropy", net->mean_entropy()}};
      log_file << row.dump() << "\n";
      log_file.flush();
      bar.advance(1, fmt::format("loss {:.4f} lat {:.3f}/{:.3f} ms", lt.item<double>(), e, T));
      if (opts.on_step) opts.on_step(step + 1);
      const bool stop = g_stop.load();
      if (stop || (c.checkpoint_every > 0 && (step + 1) % c.checkpoint_every == 0) || step + 1 == last)
        save_checkpoint(opts.out_dir, *net, arch_opt, w_opt.get(), step + 1, rng, ps, c);
      res.steps_done = step + 1;
      step_seconds_sum += std::chrono::duration<double>(std::chrono::steady_clock::now() - phase_t0).count();
      phase_t0 = std::chrono::steady_clock::now();
      ++steps_timed;
      if (stop) {
        spdlog::warn("stopped at step {}; checkpoint written to {}/checkpoint (continue with --resume)", step + 1,
                     opts.out_dir);
        return false;
      }
    }
    return true;
  };

  const bool resumed = opts.resume;
  if (ps.phase == 1) {
    if (!run_phase(1, start_step, steps1, resumed && start_step > 0)) {
      res.interrupted = true;
      return res;
    }
    if (seq) {
      auto idx = net->argmax();
      ps.phase = 2;
      ps.kv_fixed.clear();
      ps.mlp_fixed.clear();
      for (size_t l = 0; l < idx.size(); ++l) {
        ps.kv_fixed.push_back(net->choices()[l].kv[idx[l].kv]);
        ps.mlp_fixed.push_back(net->choices()[l].mlp[idx[l].mlp]);
      }
      spdlog::info("sequential: widths fixed after phase 1; bit search on the subnet");
      net = make_net(2);
      start_step = steps1;
    }
  }
  if (seq && ps.phase == 2) {
    const bool restore = resumed && ck.ps.phase == 2 && start_step > steps1;
    if (!run_phase(2, std::max(start_step, steps1), c.steps, restore)) {
      res.interrupted = true;
      return res;
    }
  }

  // Discretize: argmax of every choice, then (fit_target) the greedy repair onto the target.
  auto idx = net->argmax();
  auto predict = [&](const std::vector<ChoiceIndex>& x) {
    // predict_ms reads widths and bits only: no importance orders needed.
    Arch a = arch_of_choices(x, net->choices(), base);
    a.group_size = c.space.group_size;
    return lut.predict_ms(a, M);
  };
  res.argmax_predicted_ms = predict(idx);
  if (c.fit_target && res.argmax_predicted_ms > res.target_ms) {
    res.fit_changes = fit_to_target(idx, net->log_probs(), net->choices(), predict, res.target_ms);
    const double fitted = predict(idx);
    spdlog::info("fit_target: argmax architecture {:.3f} ms > target {:.3f} ms; {} choice changes -> {:.3f} ms",
                 res.argmax_predicted_ms, res.target_ms, res.fit_changes, fitted);
    if (fitted > res.target_ms)
      spdlog::warn("fit_target: no remaining choice is faster; the result misses the target by {:.1f}% (sequential "
                   "mode keeps phase 1's widths: a lower width target or more steps may help)",
                   100.0 * (fitted / res.target_ms - 1.0));
  }
  res.arch = net->to_arch(idx, imp, base);
  res.arch.group_size = c.space.group_size;
  res.predicted_ms = lut.predict_ms(res.arch, M);
  res.arch.predicted_latency_ms = res.predicted_ms;
  res.arch.predicted_tokens = M;
  res.arch.predicted_size_bytes = lut.weight_bytes(res.arch);
  res.arch.alphas_json = net->alphas_json();
  net->set_fixed(idx);
  res.valid_ppl = perplexity(*model, data.valid);
  write_arch(res.arch, path_join(opts.out_dir, "arch.json"));
  ojson summary = {{"mode", c.mode},
                   {"steps", c.steps},
                   {"tokens", M},
                   {"original_ms", res.original_ms},
                   {"target_ms", res.target_ms},
                   {"fastest_ms", res.fastest_ms},
                   {"predicted_ms", res.predicted_ms},
                   {"argmax_predicted_ms", res.argmax_predicted_ms},
                   {"fit_target_changes", res.fit_changes},
                   {"predicted_size_bytes", res.arch.predicted_size_bytes},
                   {"original_size_bytes", lut.weight_bytes(full16)},
                   {"original_valid_ppl", res.original_valid_ppl},
                   {"valid_ppl_discretized_fake_quant", res.valid_ppl},
                   {"seconds_per_search_step", steps_timed ? step_seconds_sum / steps_timed : 0.0},
                   {"seconds_per_plain_fwd_bwd", plain_step_s},
                   {"peak_rss_mib", peak_rss_mib()}};
  write_file_atomic(path_join(opts.out_dir, "summary.json"), summary.dump(2) + "\n");
  spdlog::info("arch: {:.3f} ms predicted (target {:.3f}, original {:.3f}); valid ppl {:.3f} (original {:.3f})",
               res.predicted_ms, res.target_ms, res.original_ms, res.valid_ppl, res.original_valid_ppl);
  return res;
}

}  // namespace llmc
