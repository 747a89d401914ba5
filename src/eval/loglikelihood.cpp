#include "llmc/eval/loglikelihood.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <typeinfo>

#include "llmc/core/error.h"
#include "llmc/core/progress.h"
#include "llmc/model/llama.h"

namespace llmc {

namespace {

constexpr int64_t kMinSharedPrefix = 8;  // a batch's common context prefix runs once when at least this long
constexpr size_t kClusterPrefix = 64;    // sorted neighbours sharing this many tokens form a cluster ...
constexpr size_t kClusterMin = 4;        // ... of at least this many contexts, batched on its own
// Padding caps (tuned on stories260K and SmolLM2-135M, 1 CPU thread): padded tokens per real one
// stay under kMaxPadding, except that a batch may always grow to kPaddingFloor padded tokens (each
// forward pass has a fixed cost, e.g. streaming the weights, that small batches cannot amortize).
constexpr double kMaxPadding = 1.15;
constexpr double kPaddingFloor = 128;

// Whether `rows` rows padded to `longest` tokens are within the padding caps for `real` tokens.
bool padding_ok(size_t rows, double longest, double real) {
  const double padded = static_cast<double>(rows) * longest;
  return padded <= kPaddingFloor || padded <= kMaxPadding * real;
}

int64_t model_length(CausalLM& m, const LoglikelihoodOptions& o) {
  return o.max_length > 0 ? o.max_length : m.config().max_position_embeddings;
}

void check_request(const TokenizedRequest& r, int64_t L) {
  LLMC_CHECK(!r.context.empty(), "loglikelihood: a request has an empty context (use the BOS/EOS prefix)");
  LLMC_CHECK(!r.continuation.empty(), "loglikelihood: a request has an empty continuation");
  LLMC_CHECK(static_cast<int64_t>(r.continuation.size()) <= L,
             "loglikelihood: a continuation of {} tokens does not fit the model length {}", r.continuation.size(), L);
}

// The context the model sees: lm-eval feeds (context + continuation)[-(L+1):][:-1].
std::vector<int32_t> effective_context(const TokenizedRequest& r, int64_t L) {
  const int64_t nc = static_cast<int64_t>(r.context.size()), nk = static_cast<int64_t>(r.continuation.size());
  if (nc + nk <= L + 1) return r.context;
  const int64_t keep = L + 1 - nk;  // >= 1 since nk <= L
  return std::vector<int32_t>(r.context.end() - keep, r.context.end());
}

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

// The reference Llama can skip the LM head on positions whose logits are not needed; other models
// (subclasses may override forward) go through forward().
bool is_reference_llama(CausalLM& m) { return typeid(m) == typeid(Llama); }

// Logits (B, V) of the last slot only.
at::Tensor last_logits(CausalLM& m, const at::Tensor& tokens, const at::Tensor& pos, const at::Tensor& mask,
                       KVCache* cache) {
  const int64_t T = tokens.size(1);
  if (is_reference_llama(m)) {
    auto& l = static_cast<Llama&>(m);
    auto h = l.hidden_states(tokens, pos, mask, cache).narrow(1, T - 1, 1);
    h = rms_norm(h, l.weights().final_norm, l.config().rms_norm_eps);
    return l.weights().lm_head->forward(h).to(at::kFloat).squeeze(1);
  }
  return m.forward(tokens, pos, mask, cache).select(1, T - 1);
}

// Fills the cache; the logits are not needed.
void prefill(CausalLM& m, const TokenLogprobsFn& fast, const at::Tensor& tokens, const at::Tensor& pos,
             const at::Tensor& mask, KVCache* cache) {
  if (fast) fast(tokens, pos, mask, cache, {}, {}, {});
  else if (is_reference_llama(m)) static_cast<Llama&>(m).hidden_states(tokens, pos, mask, cache);
  else m.forward(tokens, pos, mask, cache);
}

// Copies slots [0, n) of row `sr` of cache tensor `s` (B, heads, max_len, hd) to row `dr` of `d`
// (same heads and hd). A plain memcpy per head for contiguous tensors: ATen's copy_ would wake its
// OpenMP workers, whose spinning competes with the engine's threads on small machines.
void copy_slots(const at::Tensor& s, int64_t sr, at::Tensor& d, int64_t dr, int64_t n) {
  if (n <= 0) return;
  if (!s.is_contiguous() || !d.is_contiguous() || s.scalar_type() != d.scalar_type()) {
    d[dr].narrow(1, 0, n).copy_(s[sr].narrow(1, 0, n));
    return;
  }
  const int64_t H = s.size(1), hd = s.size(3), es = static_cast<int64_t>(s.element_size());
  const auto* sp = static_cast<const char*>(s.data_ptr());
  auto* dp = static_cast<char*>(d.data_ptr());
  for (int64_t h = 0; h < H; ++h)
    std::memcpy(dp + ((dr * H + h) * d.size(2)) * hd * es, sp + ((sr * H + h) * s.size(2)) * hd * es,
                static_cast<size_t>(n * hd * es));
}

// A cache whose row r holds the filled slots of row index[r] of `c` (slots past c.len: whatever
// m.new_cache leaves there; no forward reads them). legacy: ATen's index_select of every slot (the
// path before the fast one, kept for A/B runs with opts.logprobs empty).
std::unique_ptr<KVCache> gather_rows(CausalLM& m, const KVCache& c, const std::vector<int64_t>& index, bool legacy) {
  if (legacy) {
    auto out = std::make_unique<KVCache>();
    out->len = c.len;
    out->max_len = c.max_len;
    const auto idx = at::tensor(index, at::kLong);
    for (const auto& k : c.k) out->k.push_back(k.index_select(0, idx));
    for (const auto& v : c.v) out->v.push_back(v.index_select(0, idx));
    return out;
  }
  auto out = m.new_cache(static_cast<int64_t>(index.size()), c.max_len);
  for (size_t l = 0; l < c.k.size(); ++l)
    for (size_t r = 0; r < index.size(); ++r) {
      copy_slots(c.k[l], index[r], out->k[l], static_cast<int64_t>(r), c.len);
      copy_slots(c.v[l], index[r], out->v[l], static_cast<int64_t>(r), c.len);
    }
  out->len = c.len;
  return out;
}

// Copies the filled slots of `src` into `dst` (same batch size, dst.max_len >= src.len).
void copy_prefix(const KVCache& src, KVCache& dst, bool legacy) {
  if (legacy) {
    for (size_t l = 0; l < src.k.size(); ++l) {
      dst.k[l].narrow(2, 0, src.len).copy_(src.k[l].narrow(2, 0, src.len));
      dst.v[l].narrow(2, 0, src.len).copy_(src.v[l].narrow(2, 0, src.len));
    }
    dst.len = src.len;
    return;
  }
  for (size_t l = 0; l < src.k.size(); ++l)
    for (int64_t r = 0; r < src.k[l].size(0); ++r) {
      copy_slots(src.k[l], r, dst.k[l], r, src.len);
      copy_slots(src.v[l], r, dst.v[l], r, src.len);
    }
  dst.len = src.len;
}

struct Group {
  const std::vector<int32_t>* ctx;  // effective context
  std::vector<size_t> reqs;         // requests scored after it
  // Tokens of its row: the context, and on the fast path (score_branches) every continuation but
  // its last token too.
  int64_t row_len = 0;
};

// The fast path's stages B and C in one forward: row g holds the rest of context g past the shared
// prefix P (segment 0), then each of its requests' continuation tokens but the last as a branch
// (segment j + 1 for the group's request j: it sees the context and itself, not the other branches;
// eval/scoring.h). The context's last slot scores every first token, branch slot t the
// continuation's token t + 1. Rows are left-padded to Lmax so that they end at the same slot.
// Against a forward per chunk of continuations from copies of the context's cache: no cache copies,
// no right padding, and one large forward instead of several small ones.
void score_branches(const TokenLogprobsFn& fast, const std::vector<Group>& groups, const std::vector<size_t>& batch,
                    const std::vector<TokenizedRequest>& reqs, int64_t P, int64_t Lmax, KVCache& cache,
                    std::vector<double>& out, LoglikelihoodStats& st) {
  const int64_t G = static_cast<int64_t>(batch.size());
  auto tokens = at::zeros({G, Lmax}, at::kLong);
  auto pos = at::zeros({G, Lmax}, at::kLong);
  auto seg = at::zeros({G, Lmax}, at::kInt);
  auto mask = at::zeros({G, P + Lmax}, at::kBool);
  std::vector<int64_t> rows, tgt;
  std::vector<std::pair<size_t, size_t>> span;  // per request of the batch: its entries [begin, end) of rows
  std::vector<size_t> req;                       // and the request
  {
    auto ta = tokens.accessor<int64_t, 2>();
    auto pa = pos.accessor<int64_t, 2>();
    auto sa = seg.accessor<int32_t, 2>();
    auto ma = mask.accessor<bool, 2>();
    for (int64_t g = 0; g < G; ++g) {
      const Group& gr = groups[batch[g]];
      const auto& ctx = *gr.ctx;
      const int64_t nctx = static_cast<int64_t>(ctx.size()), n = nctx - P;
      int64_t at = Lmax - (gr.row_len - P);  // the row's first real slot
      for (int64_t s = 0; s < P; ++s) ma[g][s] = true;
      for (int64_t t = 0; t < n; ++t, ++at) {
        ta[g][at] = ctx[P + t];
        pa[g][at] = P + t;
        ma[g][P + at] = true;
      }
      const int64_t last = g * Lmax + at - 1;  // the context's last slot
      st.model_tokens += n;
      for (size_t j = 0; j < gr.reqs.size(); ++j) {
        const auto& cont = reqs[gr.reqs[j]].continuation;
        const size_t begin = rows.size();
        rows.push_back(last);
        tgt.push_back(cont[0]);
        for (int64_t t = 0; t + 1 < static_cast<int64_t>(cont.size()); ++t, ++at) {
          ta[g][at] = cont[t];
          pa[g][at] = nctx + t;
          sa[g][at] = static_cast<int32_t>(j + 1);
          ma[g][P + at] = true;
          rows.push_back(g * Lmax + at);
          tgt.push_back(cont[t + 1]);
        }
        span.emplace_back(begin, rows.size());
        req.push_back(gr.reqs[j]);
        st.model_tokens += static_cast<int64_t>(cont.size()) - 1;
      }
    }
  }
  const std::vector<double> lp = fast(tokens, pos, mask, &cache, rows, tgt, seg);
  // out = first token's log-prob + the sum of the others' (the order of the chunked path's sums).
  for (size_t k = 0; k < req.size(); ++k) {
    double rest = 0;
    for (size_t i = span[k].first + 1; i < span[k].second; ++i) rest += lp[i];
    out[req[k]] = lp[span[k].first] + rest;
  }
  ++st.forwards;
}

// Scores every request of the groups in `batch`; writes out[request].
// `unit_prefix` (batch 1, may be null): the KV cache of a prefix every context of the batch shares
// and extends by at least one token, computed once for all batches of a unit.
void score_batch(CausalLM& model, const TokenLogprobsFn& fast, const std::vector<Group>& groups,
                 const std::vector<size_t>& batch, const std::vector<TokenizedRequest>& reqs,
                 const KVCache* unit_prefix, std::vector<double>& out, LoglikelihoodStats& st) {
  const int64_t G = static_cast<int64_t>(batch.size());
  const auto& ctx0 = *groups[batch[0]].ctx;
  const int64_t have = unit_prefix ? unit_prefix->len : 0;
  // Shared prefix of all contexts, leaving each at least one token to run per row.
  int64_t P = 0;
  if (G >= 2) {
    size_t p = ctx0.size() - 1;
    for (size_t g : batch) p = std::min({p, groups[g].ctx->size() - 1, common_prefix(ctx0, *groups[g].ctx)});
    P = static_cast<int64_t>(p) >= kMinSharedPrefix ? static_cast<int64_t>(p) : 0;
  }
  P = std::max(P, have);
  // Slots past P: the fast path's rows (score_branches), or the longest context rest (Rmax) and then
  // the longest continuation but its last token (Kmax) of the stages below.
  int64_t Lmax = 0, Rmax = 0, Kmax = 0;
  std::vector<size_t> row_req;
  std::vector<int64_t> row_group;
  for (int64_t g = 0; g < G; ++g) {
    const Group& gr = groups[batch[g]];
    if (fast) {
      Lmax = std::max<int64_t>(Lmax, gr.row_len - P);
      continue;
    }
    Rmax = std::max<int64_t>(Rmax, static_cast<int64_t>(gr.ctx->size()) - P);
    for (size_t r : gr.reqs) {
      row_req.push_back(r);
      row_group.push_back(g);
      Kmax = std::max<int64_t>(Kmax, static_cast<int64_t>(reqs[r].continuation.size()) - 1);
    }
  }
  const int64_t R = static_cast<int64_t>(row_req.size());
  const int64_t S = P + (fast ? Lmax : Rmax + Kmax);

  // Stage A: the shared prefix, once (starting from the unit's prefix), copied to the G context rows.
  std::unique_ptr<KVCache> cache;
  if (P > 0) {
    auto one = model.new_cache(1, S);
    if (have > 0) copy_prefix(*unit_prefix, *one, !fast);
    if (P > have) {
      std::vector<int64_t> ids(ctx0.begin() + have, ctx0.begin() + P);
      prefill(model, fast, at::tensor(ids, at::kLong).unsqueeze(0), at::arange(have, P, at::kLong).unsqueeze(0),
              at::ones({1, P}, at::kBool), one.get());
      st.model_tokens += P - have;
      ++st.forwards;
    }
    cache = gather_rows(model, *one, std::vector<int64_t>(static_cast<size_t>(G), 0), !fast);
  } else {
    cache = model.new_cache(G, S);
  }

  if (fast) {
    score_branches(fast, groups, batch, reqs, P, Lmax, *cache, out, st);
    return;
  }

  // Stage B: the rest of each context, left-padded so that every row ends at the same slot.
  auto tokens = at::zeros({G, Rmax}, at::kLong);
  auto pos = at::zeros({G, Rmax}, at::kLong);
  auto mask = at::zeros({G, P + Rmax}, at::kBool);
  {
    auto ta = tokens.accessor<int64_t, 2>();
    auto pa = pos.accessor<int64_t, 2>();
    auto ma = mask.accessor<bool, 2>();
    for (int64_t g = 0; g < G; ++g) {
      const auto& ctx = *groups[batch[g]].ctx;
      const int64_t n = static_cast<int64_t>(ctx.size()) - P, off = Rmax - n;
      for (int64_t s = 0; s < P; ++s) ma[g][s] = true;
      for (int64_t t = 0; t < n; ++t) {
        ta[g][off + t] = ctx[P + t];
        pa[g][off + t] = P + t;
        ma[g][P + off + t] = true;
      }
      st.model_tokens += n;
    }
  }
  std::vector<int64_t> first_tok(R);
  for (int64_t r = 0; r < R; ++r) first_tok[r] = reqs[row_req[r]].continuation[0];
  {
    auto first = at::log_softmax(last_logits(model, tokens, pos, mask, cache.get()), -1);  // (G, V)
    auto row_group_t = at::tensor(row_group, at::kLong);
    auto first_lp = first.index_select(0, row_group_t)
                        .gather(1, at::tensor(first_tok, at::kLong).unsqueeze(1))
                        .squeeze(1)
                        .to(at::kDouble)
                        .contiguous();
    const double* fl = first_lp.data_ptr<double>();
    for (int64_t r = 0; r < R; ++r) out[row_req[r]] = fl[r];
  }
  ++st.forwards;

  // Stage C: the remaining continuation tokens, each row from a copy of its context's cache,
  // right-padded. Rows with one-token continuations are done; the others run longest first in
  // chunks within the padding caps.
  std::vector<int64_t> todo;
  for (int64_t r = 0; r < R; ++r)
    if (reqs[row_req[r]].continuation.size() > 1) todo.push_back(r);
  auto steps = [&](int64_t r) { return static_cast<int64_t>(reqs[row_req[r]].continuation.size()) - 1; };
  std::stable_sort(todo.begin(), todo.end(), [&](int64_t a, int64_t b) { return steps(a) > steps(b); });
  for (size_t c0 = 0; c0 < todo.size();) {
    const int64_t K = steps(todo[c0]);
    int64_t real = 0;
    size_t c1 = c0;
    while (c1 < todo.size() &&
           (c1 == c0 || padding_ok(c1 - c0 + 1, static_cast<double>(K), static_cast<double>(real + steps(todo[c1])))))
      real += steps(todo[c1++]);
    const int64_t n = static_cast<int64_t>(c1 - c0);
    std::vector<int64_t> rows(todo.begin() + c0, todo.begin() + c1), groups_of(n);
    for (int64_t i = 0; i < n; ++i) groups_of[i] = row_group[rows[i]];
    auto gidx = at::tensor(groups_of, at::kLong);
    auto cc = gather_rows(model, *cache, groups_of, /*legacy=*/true);  // only without opts.logprobs here
    auto ctok = at::zeros({n, K}, at::kLong);
    auto cpos = at::zeros({n, K}, at::kLong);
    auto tgt = at::zeros({n, K}, at::kLong);
    auto valid = at::zeros({n, K}, at::kDouble);
    auto cmask = at::cat({mask.index_select(0, gidx), at::zeros({n, K}, at::kBool)}, 1);
    {
      auto ta = ctok.accessor<int64_t, 2>();
      auto pa = cpos.accessor<int64_t, 2>();
      auto ga = tgt.accessor<int64_t, 2>();
      auto va = valid.accessor<double, 2>();
      auto ma = cmask.accessor<bool, 2>();
      for (int64_t i = 0; i < n; ++i) {
        const auto& cont = reqs[row_req[rows[i]]].continuation;
        const int64_t nctx = static_cast<int64_t>(groups[batch[groups_of[i]]].ctx->size());
        for (int64_t t = 0; t + 1 < static_cast<int64_t>(cont.size()); ++t) {
          ta[i][t] = cont[t];
          pa[i][t] = nctx + t;
          ga[i][t] = cont[t + 1];
          va[i][t] = 1.0;
          ma[i][P + Rmax + t] = true;
        }
        st.model_tokens += static_cast<int64_t>(cont.size()) - 1;
      }
    }
    {
      auto logp = at::log_softmax(model.forward(ctok, cpos, cmask, cc.get()), -1);  // (n, K, V)
      auto rest = (logp.gather(2, tgt.unsqueeze(2)).squeeze(2).to(at::kDouble) * valid).sum(1).contiguous();
      const double* rl = rest.data_ptr<double>();
      for (int64_t i = 0; i < n; ++i) out[row_req[rows[i]]] += rl[i];
    }
    ++st.forwards;
    c0 = c1;
  }
}

}  // namespace

std::vector<double> loglikelihoods(CausalLM& model, const std::vector<TokenizedRequest>& requests,
                                   const LoglikelihoodOptions& opts, LoglikelihoodStats* stats) {
  at::NoGradGuard no_grad;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t L = model_length(model, opts);
  LoglikelihoodStats st;
  st.requests = static_cast<int64_t>(requests.size());

  // Group the requests by the context the model sees (std::map: sorted, so shared prefixes are
  // neighbours).
  std::map<std::vector<int32_t>, std::vector<size_t>> by_ctx;
  for (size_t i = 0; i < requests.size(); ++i) {
    check_request(requests[i], L);
    auto ctx = effective_context(requests[i], L);
    st.tokens += static_cast<int64_t>(ctx.size() + requests[i].continuation.size());
    by_ctx[std::move(ctx)].push_back(i);
  }
  std::vector<Group> groups;
  groups.reserve(by_ctx.size());
  for (const auto& [ctx, ids] : by_ctx) {
    groups.push_back({&ctx, ids});
    Group& g = groups.back();
    g.row_len = static_cast<int64_t>(ctx.size());
    if (opts.logprobs)
      for (size_t r : ids) g.row_len += static_cast<int64_t>(requests[r].continuation.size()) - 1;
  }

  // Units batched separately: clusters of contexts with a long common prefix, then the rest.
  std::vector<std::vector<size_t>> units;
  std::vector<size_t> rest;
  for (size_t i = 0; i < groups.size();) {
    size_t j = i + 1;
    while (j < groups.size() && common_prefix(*groups[j - 1].ctx, *groups[j].ctx) >= kClusterPrefix) ++j;
    if (j - i >= kClusterMin) {
      units.emplace_back();
      for (size_t k = i; k < j; ++k) units.back().push_back(k);
    } else {
      for (size_t k = i; k < j; ++k) rest.push_back(k);
    }
    i = j;
  }
  if (!rest.empty()) units.push_back(std::move(rest));
  auto longer = [&](size_t a, size_t b) { return groups[a].row_len > groups[b].row_len; };
  for (auto& u : units) std::stable_sort(u.begin(), u.end(), longer);  // little padding within a batch
  std::stable_sort(units.begin(), units.end(),
                   [&](const std::vector<size_t>& a, const std::vector<size_t>& b) { return longer(a[0], b[0]); });

  std::vector<double> out(requests.size(), 0.0);
  Progress progress(opts.label, st.requests, "req");
  const size_t B = static_cast<size_t>(std::max<int64_t>(1, opts.batch_size));
  for (const auto& u : units) {
    // Row lengths (Group::row_len) beyond the prefix all contexts of the unit share (run once per batch).
    size_t shared = groups[u[0]].ctx->size();
    for (size_t g : u) shared = std::min(shared, common_prefix(*groups[u[0]].ctx, *groups[g].ctx));
    auto own = [&](size_t g) { return static_cast<double>(groups[g].row_len - static_cast<int64_t>(shared)); };
    // A prefix shared by a unit of several batches (MMLU: a subject's header and few-shot block)
    // runs once for the unit instead of once per batch; every context keeps >= 1 token of its own.
    std::unique_ptr<KVCache> unit_prefix;
    size_t pu = shared;
    for (size_t g : u) pu = std::min(pu, groups[g].ctx->size() - 1);
    if (static_cast<int64_t>(pu) >= kMinSharedPrefix && u.size() >= 2) {
      const int64_t n = static_cast<int64_t>(pu);
      unit_prefix = model.new_cache(1, n);
      const auto& c = *groups[u[0]].ctx;
      prefill(model, opts.logprobs, at::tensor(std::vector<int64_t>(c.begin(), c.begin() + n), at::kLong).unsqueeze(0),
              at::arange(n, at::kLong).unsqueeze(0), at::ones({1, n}, at::kBool), unit_prefix.get());
      st.model_tokens += n;
      ++st.forwards;
    }
    size_t p = 0;
    while (p < u.size()) {
      std::vector<size_t> batch;
      size_t rows = 0;
      double real = 0;
      // Contexts come longest first, so the first one sets the padded length; a batch stops at B
      // requests or at the padding caps (one long outlier context must not make every row of its
      // batch that long).
      while (p < u.size() && (batch.empty() || (rows + groups[u[p]].reqs.size() <= B &&
                                                padding_ok(batch.size() + 1, own(batch[0]), real + own(u[p]))))) {
        rows += groups[u[p]].reqs.size();
        real += own(u[p]);
        batch.push_back(u[p++]);
      }
      score_batch(model, opts.logprobs, groups, batch, requests, unit_prefix.get(), out, st);
      progress.advance(static_cast<int64_t>(rows));
    }
  }
  progress.finish();
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (stats) *stats = st;
  return out;
}

std::vector<double> loglikelihoods_naive(CausalLM& model, const std::vector<TokenizedRequest>& requests,
                                         const LoglikelihoodOptions& opts, LoglikelihoodStats* stats) {
  at::NoGradGuard no_grad;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t L = model_length(model, opts);
  LoglikelihoodStats st;
  st.requests = static_cast<int64_t>(requests.size());
  std::vector<double> out(requests.size(), 0.0);
  Progress progress(opts.label + " (naive)", st.requests, "req");
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    check_request(r, L);
    std::vector<int64_t> full(r.context.begin(), r.context.end());
    full.insert(full.end(), r.continuation.begin(), r.continuation.end());
    const int64_t n = static_cast<int64_t>(full.size());
    const int64_t start = std::max<int64_t>(0, n - (L + 1));
    std::vector<int64_t> inp(full.begin() + start, full.end() - 1);
    const int64_t T = static_cast<int64_t>(inp.size()), nk = static_cast<int64_t>(r.continuation.size());
    auto logp = at::log_softmax(model.forward(at::tensor(inp, at::kLong).unsqueeze(0))[0], -1);  // (T, V)
    std::vector<int64_t> cont(r.continuation.begin(), r.continuation.end());
    auto picked = logp.narrow(0, T - nk, nk).gather(1, at::tensor(cont, at::kLong).unsqueeze(1));
    out[i] = picked.to(at::kDouble).sum().item<double>();
    st.tokens += T + 1;
    st.model_tokens += T;
    ++st.forwards;
    progress.advance(1);
  }
  progress.finish();
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (stats) *stats = st;
  return out;
}

}  // namespace llmc
