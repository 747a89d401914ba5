// Fuzz target: a SentencePiece tokenizer.model (tokenizer/spm_model.h parse_spm_model). A model that
// parses is converted to GGUF tokenizer metadata (tokenizer/gguf_vocab.h, as GGUF export does for a
// Hugging Face folder), written and read back, and the tokenizer our GGUF reader builds from it
// encodes and decodes a few texts with ids inside the vocabulary.
#include <memory>

#include "fuzz_common.h"
#include "llmc/io/gguf_writer.h"
#include "llmc/tokenizer/bpe.h"
#include "llmc/tokenizer/gguf_vocab.h"
#include "llmc/tokenizer/spm_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  llmc::SpmModelProto m;
  bool parsed = false;
  llmc::fuzz::run([&] {
    m = llmc::parse_spm_model(in, "tokenizer.model");
    parsed = true;
  });
  if (!parsed) return 0;
  const size_t n = m.pieces.size();
  if (n == 0 || m.scores.size() != n || m.types.size() != n) llmc::fuzz::bug("pieces, scores and types differ in count");
  for (int id : {m.unk_id, m.bos_id, m.eos_id, m.pad_id})
    if (id < -1 || id >= static_cast<int>(n)) llmc::fuzz::bug("a trainer_spec id outside the pieces was accepted");

  const std::string model = llmc::fuzz::scratch_file("hf/tokenizer.model", in);
  const std::string dir = model.substr(0, model.size() - std::string("/tokenizer.model").size());
  std::unique_ptr<llmc::GGUFFile> f;
  llmc::fuzz::run([&] {
    const llmc::GGUFMetadata kv = llmc::gguf_tokenizer_from_hf(dir, static_cast<int64_t>(n) + 2, -1, -1);
    llmc::GGUFWriter w;
    w.set("general.architecture", llmc::gguf_str("llama"));
    for (const auto& [k, v] : kv) w.set(k, v);
    const std::string p = llmc::fuzz::scratch_dir() + "/t.gguf";
    w.write(p);
    f = std::make_unique<llmc::GGUFFile>(p);
  });
  if (!f) return 0;
  if (f->get_string_array("tokenizer.ggml.tokens").size() != n + 2) llmc::fuzz::bug("the vocabulary is not padded to the rows");
  std::unique_ptr<llmc::Tokenizer> tok;
  llmc::fuzz::run([&] { tok = llmc::tokenizer_from_gguf(*f); });
  if (!tok) return 0;
  llmc::fuzz::check_encode_decode(*tok, {"ab abc 12 345", "  a\n\nb\tc", "<s>ab</s>", "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"});
  return 0;
}
