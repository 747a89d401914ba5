// The training toolkit (finetune/train.h) and the token stream (data/token_stream.h): Adam's state
// round trip, Adam's two roundings, the losses against hand-computed values, the BOS/EOS rule.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/optim/adam.h>

#include <cmath>
#include <map>

#include "llmc/data/token_stream.h"
#include "llmc/finetune/train.h"

using namespace llmc;

namespace {

// loss = sum(w * (x - c)^2) on a 5-vector; the gradient differs per element and per step.
at::Tensor quadratic(const at::Tensor& x) {
  auto c = at::arange(5, at::kFloat) * 0.3 - 0.7;
  auto w = at::arange(1, 6, at::kFloat);
  return (w * (x - c).pow(2)).sum();
}

at::Tensor start_point() { return (at::arange(5, at::kFloat) * -0.25 + 0.4).set_requires_grad(true); }

void adam_steps(Adam& opt, const at::Tensor& x, int n) {
  for (int i = 0; i < n; ++i) {
    quadratic(x).backward();
    opt.step();
    opt.zero_grad();
  }
}

}  // namespace

TEST(Train, AdamStateSaveRestoreResumesIdentically) {
  for (auto rounding : {AdamRounding::Torch, AdamRounding::Search}) {
    auto a = start_point();
    Adam whole({a}, 0.05, rounding);
    adam_steps(whole, a, 8);

    auto b = start_point();
    Adam first({b}, 0.05, rounding);
    adam_steps(first, b, 3);
    std::map<std::string, at::Tensor> saved;  // as a checkpoint holds them: copies, by name
    for (const auto& [name, t] : first.state("adam_arch")) saved[name] = t.clone();
    ASSERT_EQ(saved.size(), 2u);
    ASSERT_TRUE(saved.count("adam_arch.m.0") && saved.count("adam_arch.v.0"));
    const int64_t t = first.steps();
    EXPECT_EQ(t, 3);

    auto c = b.detach().clone().set_requires_grad(true);  // the parameters, as restored
    Adam second({c}, 0.05, rounding);
    for (auto& [name, dst] : second.state("adam_arch")) dst.copy_(saved.at(name));
    second.set_steps(t);
    adam_steps(second, c, 5);
    EXPECT_TRUE(at::equal(a, c)) << a << c;

    // Without the moments the run differs: the check above can fail.
    auto d = b.detach().clone().set_requires_grad(true);
    Adam fresh({d}, 0.05, rounding);
    fresh.set_steps(t);
    adam_steps(fresh, d, 5);
    EXPECT_FALSE(at::equal(a, d));
  }
}

TEST(Train, AdamTorchRoundingMatchesTorchOptimAdam) {
  auto a = start_point();
  Adam ours({a}, 0.05, AdamRounding::Torch);
  adam_steps(ours, a, 10);
  auto b = start_point();
  torch::optim::Adam ref({b}, torch::optim::AdamOptions(0.05));
  for (int i = 0; i < 10; ++i) {
    ref.zero_grad();
    quadratic(b).backward();
    ref.step();
  }
  EXPECT_TRUE(at::equal(a, b)) << a << b;
  // The search's rounding is the same update, rounded differently.
  auto c = start_point();
  Adam search({c}, 0.05, AdamRounding::Search);
  adam_steps(search, c, 10);
  EXPECT_TRUE(at::allclose(a, c, 1e-5, 1e-6));
}

// set_plain_sgd: p -= lr * g, whatever the gradient's size (Adam would move both entries by ~lr).
TEST(Train, PlainSgdStepsByTheGradient) {
  auto p = at::tensor({1.0f, 2.0f}, at::kFloat).set_requires_grad(true);
  Adam opt({p}, 0.1, AdamRounding::Search);
  opt.set_plain_sgd(true);
  (p * at::tensor({0.5f, -20.0f}, at::kFloat)).sum().backward();
  opt.step();
  EXPECT_FLOAT_EQ(p[0].item<float>(), 1.0f - 0.1f * 0.5f);
  EXPECT_FLOAT_EQ(p[1].item<float>(), 2.0f + 0.1f * 20.0f);
}

TEST(Train, CrossEntropyByHand) {
  // B=1, T=3, V=2: positions 0 and 1 predict tokens 1 and 0.
  auto logits = at::tensor({0.0f, 1.0f, 2.0f, 0.0f, 5.0f, 5.0f}, at::kFloat).view({1, 3, 2});
  auto tokens = at::tensor({1, 1, 0}, at::kLong).view({1, 3});
  auto nll = [](double right, double other) { return -(right - std::log(std::exp(right) + std::exp(other))); };
  const double want = (nll(1, 0) + nll(2, 0)) / 2;  // the last position predicts nothing
  EXPECT_NEAR(next_token_cross_entropy(logits, tokens).item<double>(), want, 1e-6);
  EXPECT_NEAR(task_loss(logits, tokens, at::Tensor()).item<double>(), want, 1e-6);
}

TEST(Train, CrossEntropyEqualsTorchCrossEntropyBitwise) {
  // Fine-tuning used at::cross_entropy_loss on the flattened rows; the toolkit's loss (search's
  // formula) must give the same value and gradient.
  at::manual_seed(3);
  auto x = at::randn({3, 7, 11}, at::kFloat).set_requires_grad(true);
  auto y = x.detach().clone().set_requires_grad(true);
  auto tok = at::randint(11, {3, 7}, at::kLong);
  auto ours = next_token_cross_entropy(x, tok);
  auto ref = at::cross_entropy_loss(y.narrow(1, 0, 6).reshape({-1, 11}), tok.narrow(1, 1, 6).reshape({-1}));
  EXPECT_TRUE(at::equal(ours, ref)) << ours.item<double>() - ref.item<double>();
  ours.backward();
  ref.backward();
  EXPECT_TRUE(at::equal(x.grad(), y.grad()));
}

TEST(Train, KlToTeacherByHand) {
  // Two positions, V=2: the first agrees with the teacher (KL 0), the second does not.
  auto student = at::tensor({0.0f, 1.0f, 0.0f, 0.0f}, at::kFloat).view({1, 2, 2});
  auto teacher = at::tensor({0.0f, 1.0f, 0.0f, 2.0f}, at::kFloat).view({1, 2, 2});
  const double p1 = 1 / (1 + std::exp(2.0)), p2 = 1 - p1;  // teacher at position 1
  const double kl = p1 * std::log(p1 / 0.5) + p2 * std::log(p2 / 0.5);
  EXPECT_NEAR(kl_to_teacher(student, teacher).item<double>(), kl / 2, 1e-6);
  auto tokens = at::zeros({1, 2}, at::kLong);
  EXPECT_NEAR(task_loss(student, tokens, teacher).item<double>(), kl / 2, 1e-6);
  EXPECT_NEAR(kl_to_teacher(teacher, teacher).item<double>(), 0.0, 1e-7);
}

namespace {

// One token per character ('a' -> 10, 'b' -> 11, ...); encode(add_bos) prepends BOS as real
// tokenizers do.
class CharTokenizer final : public Tokenizer {
 public:
  CharTokenizer(int bos, int eos, bool add_bos) : bos_(bos), eos_(eos), add_bos_(add_bos) {}
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> out;
    if (add_bos && bos_ >= 0) out.push_back(bos_);
    for (char ch : text) out.push_back(10 + (ch - 'a'));
    return out;
  }
  std::string decode(const std::vector<int32_t>&) const override { return {}; }
  int vocab_size() const override { return 40; }
  int bos_id() const override { return bos_; }
  int eos_id() const override { return eos_; }
  bool add_bos_default() const override { return add_bos_; }
  std::string type() const override { return "char"; }

 private:
  int bos_, eos_;
  bool add_bos_;
};

std::vector<TextDocument> docs(std::initializer_list<const char*> texts) {
  std::vector<TextDocument> d;
  for (const char* t : texts) d.push_back({t, t});
  return d;
}

using Ids = std::vector<int32_t>;

}  // namespace

TEST(TokenStream, StartEachPutsTheStartTokenBeforeEveryDocument) {
  CharTokenizer tok(1, 2, /*add_bos=*/false);  // the rule does not depend on the tokenizer's default
  std::vector<int32_t> s;
  TokenStreamOptions o;
  o.boundary = DocBoundary::StartEach;
  o.start = 1;
  EXPECT_FALSE(append_documents(s, tok, docs({"ab", "c"}), o));
  EXPECT_EQ(s, (Ids{1, 10, 11, 1, 12}));
  EXPECT_FALSE(append_documents(s, tok, docs({"d"}), o));  // a second source continues the stream
  EXPECT_EQ(s, (Ids{1, 10, 11, 1, 12, 1, 13}));
}

// Sources mixed one document from each in turn; a shorter source runs out, the others go on.
TEST(TokenStream, InterleaveTakesTheSourcesInTurn) {
  auto texts = [](const std::vector<TextDocument>& d) {
    std::vector<std::string> t;
    for (const auto& x : d) t.push_back(x.text);
    return t;
  };
  EXPECT_EQ(texts(interleave_documents({docs({"a1", "a2", "a3"}), docs({"b1"}), docs({"c1", "c2"})})),
            (std::vector<std::string>{"a1", "b1", "c1", "a2", "c2", "a3"}));
  EXPECT_EQ(texts(interleave_documents({docs({"a1", "a2"})})), (std::vector<std::string>{"a1", "a2"}));
  EXPECT_TRUE(interleave_documents({}).empty());
}

TEST(TokenStream, TokenizerDefaultBosBeforeEachOrEosBetween) {
  TokenStreamOptions o;
  o.boundary = DocBoundary::TokenizerDefault;
  {
    CharTokenizer tok(1, 2, /*add_bos=*/true);  // = encode(text, true) per document
    std::vector<int32_t> s;
    append_documents(s, tok, docs({"ab", "c"}), o);
    EXPECT_EQ(s, (Ids{1, 10, 11, 1, 12}));
  }
  {
    CharTokenizer tok(1, 2, /*add_bos=*/false);  // EOS between documents, none in front
    std::vector<int32_t> s;
    append_documents(s, tok, docs({"ab", "c"}), o);
    append_documents(s, tok, docs({"d"}), o);
    EXPECT_EQ(s, (Ids{10, 11, 2, 12, 2, 13}));
  }
  {
    CharTokenizer tok(-1, -1, /*add_bos=*/false);  // neither: plain concatenation
    std::vector<int32_t> s;
    append_documents(s, tok, docs({"ab", "c"}), o);
    EXPECT_EQ(s, (Ids{10, 11, 12}));
  }
}

TEST(TokenStream, StopsAfterTheDocumentThatFillsItAndCutsSequences) {
  CharTokenizer tok(1, 2, true);
  TokenStreamOptions o;
  o.start = 1;
  o.max_tokens = 4;
  std::vector<int32_t> s;
  EXPECT_TRUE(append_documents(s, tok, docs({"ab", "cd", "ef"}), o));
  EXPECT_EQ(s, (Ids{1, 10, 11, 1, 12, 13}));  // "cd" reached 4 tokens; "ef" is not read
  EXPECT_TRUE(append_documents(s, tok, docs({"g"}), o));
  EXPECT_EQ(s.size(), 6u);

  auto seq = cut_sequences(s, 2, 3);
  ASSERT_EQ(seq.sizes(), (at::IntArrayRef{2, 3}));
  EXPECT_TRUE(at::equal(seq, at::tensor({1, 10, 11, 1, 12, 13}, at::kLong).view({2, 3})));
  EXPECT_EQ(cut_sequences(s, 3, 2).size(0), 3);
  EXPECT_THROW(cut_sequences(s, 2, 4), std::exception);

  auto b = split_batches(at::arange(10, at::kLong).view({5, 2}), 2);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[2].sizes(), (at::IntArrayRef{1, 2}));
  EXPECT_EQ(b[1][0][0].item<int64_t>(), 4);
  EXPECT_TRUE(b[1].is_contiguous());
}
