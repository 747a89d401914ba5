#include <cstdio>
#include <memory>

#include "commands.h"
#include "llmc/model/info.h"
#include "llmc/runtime/open.h"

namespace llmc::cli {

Action add_info(CLI::App& app) {
  auto o = std::make_shared<std::pair<std::string, bool>>();
  app.add_option("--model", o->first, "Model folder (Hugging Face layout) or GGUF file")->required();
  app.add_flag("--json", o->second, "Print JSON");
  return [o] {
    LoadOptions lo;
    lo.need_tokenizer = false;
    lo.check_logits = false;  // info describes a model even when its weights are broken
    auto m = open_model(o->first, lo);
    std::string s = o->second ? model_info_json(*m, o->first) + "\n" : model_info_text(*m, o->first);
    std::fputs(s.c_str(), stdout);
    return 0;
  };
}

}  // namespace llmc::cli
