#pragma once
// Reading a JSON file with the one error users see for a bad one: "PATH: not valid JSON (why)".
#include <nlohmann/json.hpp>
#include <string>

#include "llmc/core/error.h"
#include "llmc/core/files.h"

namespace llmc {

// The parsed file (nlohmann::json, or nlohmann::ordered_json to keep the file's key order); fails
// with an llmc::Error naming the file when it cannot be read or is not JSON.
template <class Json = nlohmann::json>
Json read_json_file(const std::string& path) {
  const std::string text = read_text_file(path);
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", path, e.what());
  }
}

}  // namespace llmc
