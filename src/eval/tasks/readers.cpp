// Readers for the benchmark data layouts (see ../shared/data/README.md). Every problem with a file
// is one llmc::Error naming the file, the line and what was expected.
#include <dirent.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/eval/tasks.h"
#include "llmc/tokenizer/tokenizer.h"

namespace llmc {

using json = nlohmann::json;

namespace {

// ---- UTF-8 / Python whitespace ----

// Decodes the code point starting at s[i]; sets *len to its byte length (1 for invalid bytes).
uint32_t decode_at(const std::string& s, size_t i, size_t* len) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 1;
  if (i + n > s.size()) n = 1;
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
  *len = n;
  return cp;
}

// Python str.isspace() for one code point.
bool py_isspace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

// Byte length of the leading whitespace of s.
size_t leading_space_bytes(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t n;
    if (!py_isspace(decode_at(s, i, &n))) break;
    i += n;
  }
  return i;
}

// Byte offset where the trailing whitespace of s begins.
size_t trailing_space_start(const std::string& s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xc0) == 0x80) --start;
    size_t n;
    uint32_t cp = decode_at(s, start, &n);
    if (start + n != end || !py_isspace(cp)) break;
    end = start;
  }
  return end;
}

std::string lstrip(const std::string& s) { return s.substr(leading_space_bytes(s)); }

// ---- JSON lines ----

struct Line {
  std::string text;
  int64_t number;
};

// A task file's text, checked with the one UTF-8 validator before any parsing. Unchecked, a bad byte
// would surface only at tokenization ("tokenizer input: invalid UTF-8 ..."), naming neither the file
// nor the line.
std::string read_task_text(const std::string& path) {
  const std::string text = read_text_file(path);
  size_t off = 0;
  if (const char* why = utf8_problem(text, &off)) {
    const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(off), '\n');
    fail("{}:{}: invalid UTF-8 at byte offset {} of the file (byte 0x{:02x}: {})", path, line, off,
         static_cast<unsigned char>(text[off]), why);
  }
  return text;
}

std::vector<Line> read_lines(const std::string& path, const char* expected) {
  // A folder in the file's place is reported as such (by read_text_file), not as a missing file.
  if (!file_exists(path) && !dir_exists(path)) fail("{}: data file not found (expected {})", path, expected);
  const std::string text = read_task_text(path);
  std::vector<Line> out;
  int64_t no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    ++no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out.push_back({std::move(line), no});
  }
  bool any = std::any_of(out.begin(), out.end(), [](const Line& l) { return !py_strip(l.text).empty(); });
  if (!any) fail("{}: empty file (expected {})", path, expected);
  return out;
}

std::string where_of(const std::string& path, int64_t line) { return path + ":" + std::to_string(line); }

// Parses each non-blank line as a JSON object.
std::vector<std::pair<json, std::string>> read_json_lines(const std::string& path, const char* expected) {
  std::vector<std::pair<json, std::string>> out;
  for (const auto& l : read_lines(path, expected)) {
    if (py_strip(l.text).empty()) continue;
    const std::string where = where_of(path, l.number);
    json j;
    try {
      j = json::parse(l.text);
    } catch (const json::exception& e) {
      fail("{}: invalid JSON ({}); expected one JSON object per line: {}", where, e.what(), expected);
    }
    if (!j.is_object()) fail("{}: expected a JSON object per line: {}", where, expected);
    out.emplace_back(std::move(j), where);
  }
  return out;
}

const json& need(const json& j, const char* key, const std::string& where, const char* expected) {
  auto it = j.find(key);
  if (it == j.end()) fail("{}: missing field '{}' (expected {})", where, key, expected);
  return *it;
}

std::string need_string(const json& j, const char* key, const std::string& where, const char* expected) {
  const json& v = need(j, key, where, expected);
  if (!v.is_string()) fail("{}: field '{}' must be a string (expected {})", where, key, expected);
  return v.get<std::string>();
}

int need_index(const json& j, const char* key, size_t n, const std::string& where, const char* expected) {
  const json& v = need(j, key, where, expected);
  int64_t g = -1;
  if (v.is_number_integer()) {
    g = v.get<int64_t>();
  } else if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
      fail("{}: field '{}' is '{}', expected an integer label in [0, {}]", where, key, s, n - 1);
    // More digits than any label has would overflow std::stoll (an exception naming no file).
    if (s.size() > 9) fail("{}: label {} out of range: expected an integer in [0, {}]", where, s, n - 1);
    g = std::stoll(s);
  } else {
    fail("{}: field '{}' must be an integer label in [0, {}]", where, key, n - 1);
  }
  if (g < 0 || g >= static_cast<int64_t>(n))
    fail("{}: label {} out of range: expected an integer in [0, {}]", where, g, n - 1);
  return static_cast<int>(g);
}

std::vector<std::string> need_string_array(const json& j, const char* key, const std::string& where,
                                           const char* expected) {
  const json& v = need(j, key, where, expected);
  if (!v.is_array() || v.empty()) fail("{}: field '{}' must be a non-empty array of strings ({})", where, key, expected);
  std::vector<std::string> out;
  for (const auto& x : v) {
    if (!x.is_string()) fail("{}: field '{}' must be an array of strings ({})", where, key, expected);
    out.push_back(x.get<std::string>());
  }
  return out;
}

// AI2 release layout: question.stem, question.choices[{text,label}], answerKey.
McDoc arc_doc(const json& j, const std::string& where, bool lstrip_key) {
  static const char* kExpected = "AI2 JSONL: {\"question\": {\"stem\", \"choices\": [{\"text\", \"label\"}]}, \"answerKey\"}";
  McDoc d;
  d.where = where;
  const json& q = need(j, "question", where, kExpected);
  if (!q.is_object()) fail("{}: field 'question' must be an object (expected {})", where, kExpected);
  d.fields["question"] = need_string(q, "stem", where, kExpected);
  const json& ch = need(q, "choices", where, kExpected);
  if (!ch.is_array() || ch.empty()) fail("{}: 'question.choices' must be a non-empty array ({})", where, kExpected);
  std::vector<std::string> labels;
  for (const auto& c : ch) {
    if (!c.is_object()) fail("{}: each choice must be an object {{\"text\", \"label\"}}", where);
    d.choices.push_back(need_string(c, "text", where, kExpected));
    labels.push_back(need_string(c, "label", where, kExpected));
  }
  std::string key = need_string(j, "answerKey", where, kExpected);
  if (lstrip_key) key = lstrip(key);
  auto it = std::find(labels.begin(), labels.end(), key);
  if (it == labels.end()) {
    std::string all;
    for (const auto& l : labels) all += (all.empty() ? "" : ", ") + l;
    fail("{}: answerKey '{}' is not one of the choice labels [{}]", where, key, all);
  }
  d.gold = static_cast<int>(it - labels.begin());
  return d;
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// Python str.capitalize() for ASCII letters (other characters are left as they are).
std::string py_capitalize_ascii(const std::string& s) {
  std::string out = s;
  for (size_t i = 0; i < out.size(); ++i) {
    char c = out[i];
    if (i == 0 && c >= 'a' && c <= 'z') out[i] = static_cast<char>(c - 'a' + 'A');
    if (i > 0 && c >= 'A' && c <= 'Z') out[i] = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

}  // namespace

// ---- string helpers ----

std::string py_strip(const std::string& s) {
  const size_t b = leading_space_bytes(s);
  if (b == s.size()) return "";
  return s.substr(b, trailing_space_start(s) - b);
}

std::string py_rstrip(const std::string& s) { return s.substr(0, trailing_space_start(s)); }

int64_t count_code_points(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xc0) != 0x80;
  return n;
}

std::string hellaswag_preprocess(const std::string& text) {
  // lm-eval: strip; " [title]" -> ". "; re.sub("\[.*?\]", ""); "  " -> " " (one pass, non-overlapping).
  std::string t = py_strip(text);
  std::string a;
  for (size_t i = 0; i < t.size();) {
    if (t.compare(i, 8, " [title]") == 0) {
      a += ". ";
      i += 8;
    } else {
      a += t[i++];
    }
  }
  std::string b;
  for (size_t i = 0; i < a.size();) {
    if (a[i] == '[') {
      size_t close = a.find(']', i + 1);
      if (close != std::string::npos) {
        i = close + 1;
        continue;
      }
    }
    b += a[i++];
  }
  std::string c;
  for (size_t i = 0; i < b.size();) {
    if (b[i] == ' ' && i + 1 < b.size() && b[i + 1] == ' ') {
      c += ' ';
      i += 2;
    } else {
      c += b[i++];
    }
  }
  return c;
}

std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& path,
                                               std::vector<int64_t>* row_lines) {
  // Python csv.reader, default dialect: ',' delimiter, '"' quotes with "" as an escaped quote, a
  // quote inside an unquoted field is literal, text after a closing quote joins the field
  // (strict=False), \n, \r\n and \r end a record outside quotes, blank lines give no row.
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool pending = false;         // the current record has a field in progress
  bool at_field_start = true;   // nothing of the current field read yet
  bool quoted = false, after_quote = false;
  int64_t line = 1, row_line = 1, quote_line = 0;
  auto end_record = [&] {
    if (pending) row.push_back(std::move(field));
    if (!row.empty()) {
      rows.push_back(std::move(row));
      if (row_lines) row_lines->push_back(row_line);
    }
    row.clear();
    field.clear();
    pending = false;
    at_field_start = true;
    after_quote = false;
  };
  const size_t n = text.size();
  for (size_t i = 0; i < n; ++i) {
    const char c = text[i];
    const bool crlf = c == '\r' && i + 1 < n && text[i + 1] == '\n';
    if (!pending && row.empty()) row_line = line;
    if (quoted) {
      if (c == '"') {
        quoted = false;
        after_quote = true;
      } else {
        field += c;
        if (c == '\n' || (c == '\r' && !crlf)) ++line;
      }
      continue;
    }
    if (c == '\n' || c == '\r') {
      if (crlf) ++i;
      ++line;
      end_record();
      continue;
    }
    if (c == ',') {
      row.push_back(std::move(field));
      field.clear();
      pending = true;
      at_field_start = true;
      after_quote = false;
      continue;
    }
    if (c == '"' && (at_field_start || after_quote)) {
      if (after_quote) field += '"';  // "" inside a quoted field
      else quote_line = line;
      quoted = true;
      after_quote = false;
      at_field_start = false;
      pending = true;
      continue;
    }
    field += c;
    pending = true;
    at_field_start = false;
    after_quote = false;
  }
  if (quoted) fail("{}:{}: unterminated quoted CSV field (the '\"' opened here is never closed)", path, quote_line);
  end_record();
  return rows;
}

// ---- readers ----

std::vector<McDoc> read_arc_jsonl(const std::string& path) {
  std::vector<McDoc> out;
  for (const auto& [j, where] : read_json_lines(path, "AI2 ARC JSONL: question.stem, question.choices, answerKey"))
    out.push_back(arc_doc(j, where, /*lstrip_key=*/false));
  return out;
}

std::vector<McDoc> read_boolq_jsonl(const std::string& path) {
  static const char* kExpected = "BoolQ JSONL: {\"question\", \"passage\", \"label\": true/false}";
  std::vector<McDoc> out;
  for (const auto& [j, where] : read_json_lines(path, kExpected)) {
    McDoc d;
    d.where = where;
    d.fields["passage"] = need_string(j, "passage", where, kExpected);
    d.fields["question"] = need_string(j, "question", where, kExpected);
    const json& l = need(j, "label", where, kExpected);
    // SuperGLUE copy: the strings "true"/"false"; HF: 0/1 (0 = False); also JSON booleans.
    if (l.is_boolean()) d.gold = l.get<bool>() ? 1 : 0;
    else if (l.is_string() && l.get<std::string>() == "true") d.gold = 1;
    else if (l.is_string() && l.get<std::string>() == "false") d.gold = 0;
    else if (l.is_number_integer() && (l.get<int64_t>() == 0 || l.get<int64_t>() == 1)) d.gold = l.get<int>();
    else fail("{}: label {} out of range: expected \"true\"/\"false\" (or 0/1)", where, l.dump());
    out.push_back(std::move(d));
  }
  return out;
}

std::vector<McDoc> read_piqa(const std::string& path) {
  static const char* kExpected = "PIQA JSONL: {\"goal\", \"sol1\", \"sol2\"} with labels in X-labels.lst";
  auto records = read_json_lines(path, kExpected);
  std::vector<McDoc> out;
  bool inline_labels = !records.empty() && records[0].first.contains("label");
  std::vector<Line> labels;
  std::string label_path;
  if (!inline_labels) {
    label_path = ends_with(path, ".jsonl") ? path.substr(0, path.size() - 6) + "-labels.lst" : path + "-labels.lst";
    if (!file_exists(label_path))
      fail("{}: label file not found (PIQA labels are a separate file, one 0/1 per line, next to {})", label_path, path);
    for (auto& l : read_lines(label_path, "one label 0 or 1 per line"))
      if (!py_strip(l.text).empty()) labels.push_back(l);
    if (labels.size() != records.size())
      fail("{}: {} labels for {} records in {} (expected one label per record)", label_path, labels.size(),
           records.size(), path);
  }
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& [j, where] = records[i];
    McDoc d;
    d.where = where;
    d.fields["goal"] = need_string(j, "goal", where, kExpected);
    d.choices = {need_string(j, "sol1", where, kExpected), need_string(j, "sol2", where, kExpected)};
    if (inline_labels) {
      d.gold = need_index(j, "label", 2, where, kExpected);
    } else {
      const std::string s = py_strip(labels[i].text);
      if (s != "0" && s != "1")
        fail("{}: label '{}' out of range: expected 0 or 1", where_of(label_path, labels[i].number), s);
      d.gold = s == "1" ? 1 : 0;
    }
    out.push_back(std::move(d));
  }
  return out;
}

std::vector<McDoc> read_hellaswag_txt(const std::string& path) {
  std::vector<McDoc> out;
  if (ends_with(path, ".jsonl")) {
    // The original rowanz/hellaswag JSONL: lm-eval's process_docs applies exactly.
    static const char* kExpected = "HellaSwag JSONL: {\"activity_label\", \"ctx_a\", \"ctx_b\", \"endings\", \"label\"}";
    for (const auto& [j, where] : read_json_lines(path, kExpected)) {
      McDoc d;
      d.where = where;
      const std::string ctx = need_string(j, "ctx_a", where, kExpected) + " " +
                              py_capitalize_ascii(need_string(j, "ctx_b", where, kExpected));
      d.fields["query"] = hellaswag_preprocess(need_string(j, "activity_label", where, kExpected) + ": " + ctx);
      for (const auto& e : need_string_array(j, "endings", where, kExpected)) d.choices.push_back(hellaswag_preprocess(e));
      d.gold = need_index(j, "label", d.choices.size(), where, kExpected);
      out.push_back(std::move(d));
    }
    return out;
  }
  static const char* kExpected = "6 lines per item: context, gold label 0-3, then 4 endings";
  auto lines = read_lines(path, kExpected);
  while (!lines.empty() && lines.back().text.empty()) lines.pop_back();  // trailing newline(s)
  for (size_t i = 0; i < lines.size(); i += 6) {
    const std::string where = where_of(path, lines[i].number);
    if (i + 6 > lines.size())
      fail("{}: incomplete item: {} line(s) left, expected {}", where, lines.size() - i, kExpected);
    McDoc d;
    d.where = where;
    // The context line as it stands (ctx_b is not capitalized in this extraction), through lm-eval's
    // preprocess, which also drops any [bracketed] artifacts the extraction kept.
    d.fields["query"] = hellaswag_preprocess(lines[i].text);
    const std::string label = py_strip(lines[i + 1].text);
    if (label.size() != 1 || label[0] < '0' || label[0] > '3')
      fail("{}: label '{}' out of range: expected the gold ending index 0-3 on the line after the context",
           where_of(path, lines[i + 1].number), label);
    d.gold = label[0] - '0';
    for (int k = 0; k < 4; ++k) {
      if (py_strip(lines[i + 2 + k].text).empty())
        fail("{}: empty ending {} (expected {})", where_of(path, lines[i + 2 + k].number), k, kExpected);
      d.choices.push_back(hellaswag_preprocess(lines[i + 2 + k].text));
    }
    out.push_back(std::move(d));
  }
  return out;
}

std::vector<McDoc> read_winogrande_jsonl(const std::string& path) {
  static const char* kExpected =
      "WinoGrande JSONL: {\"context_options\": [2 strings], \"continuation\", \"gold\": 0/1} or the original "
      "{\"sentence\" with one '_', \"option1\", \"option2\", \"answer\": \"1\"/\"2\"}";
  std::vector<McDoc> out;
  for (const auto& [j, where] : read_json_lines(path, kExpected)) {
    McDoc d;
    d.where = where;
    if (j.contains("context_options")) {
      d.choices = need_string_array(j, "context_options", where, kExpected);
      if (d.choices.size() != 2) fail("{}: 'context_options' has {} entries, expected 2", where, d.choices.size());
      d.fields["target"] = need_string(j, "continuation", where, kExpected);
      d.gold = need_index(j, "gold", 2, where, kExpected);
    } else {
      // lm-eval preprocess_winogrande: context = sentence[:blank] + option, target = sentence[blank+1:].strip().
      const std::string s = need_string(j, "sentence", where, kExpected);
      const size_t blank = s.find('_');
      if (blank == std::string::npos) fail("{}: 'sentence' has no '_' blank ({})", where, kExpected);
      d.choices = {s.substr(0, blank) + need_string(j, "option1", where, kExpected),
                   s.substr(0, blank) + need_string(j, "option2", where, kExpected)};
      d.fields["target"] = py_strip(s.substr(blank + 1));
      const std::string a = need_string(j, "answer", where, kExpected);
      if (a != "1" && a != "2") fail("{}: answer '{}' out of range: expected \"1\" or \"2\"", where, a);
      d.gold = a == "1" ? 0 : 1;
    }
    out.push_back(std::move(d));
  }
  return out;
}

std::vector<McDoc> read_openbookqa(const std::string& path) {
  std::vector<McDoc> out;
  if (ends_with(path, ".tsv")) {
    static const char* kExpected =
        "OpenBookQA release TSV: header 'ID, Question Stem, Choices, Complete Question, Answer Key', choices "
        "written '(A) .. (B) .. (C) .. (D) ..', answer a letter A-D";
    auto lines = read_lines(path, kExpected);
    auto split_tabs = [](const std::string& s) {
      std::vector<std::string> f;
      size_t p = 0;
      while (true) {
        size_t t = s.find('\t', p);
        f.push_back(s.substr(p, t == std::string::npos ? std::string::npos : t - p));
        if (t == std::string::npos) break;
        p = t + 1;
      }
      return f;
    };
    auto lower = [](std::string s) {
      for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return py_strip(s);
    };
    size_t first = 0;
    while (first < lines.size() && py_strip(lines[first].text).empty()) ++first;
    const auto header = split_tabs(lines[first].text);
    int c_stem = -1, c_choices = -1, c_key = -1;
    for (size_t k = 0; k < header.size(); ++k) {
      const std::string h = lower(header[k]);
      if (h == "question stem") c_stem = static_cast<int>(k);
      if (h == "choices") c_choices = static_cast<int>(k);
      if (h == "answer key") c_key = static_cast<int>(k);
    }
    if (c_stem < 0 || c_choices < 0 || c_key < 0)
      fail("{}: header must name the columns 'Question Stem', 'Choices' and 'Answer Key' ({})",
           where_of(path, lines[first].number), kExpected);
    const size_t need_cols = static_cast<size_t>(std::max({c_stem, c_choices, c_key})) + 1;
    for (size_t i = first + 1; i < lines.size(); ++i) {
      if (py_strip(lines[i].text).empty()) continue;
      const std::string where = where_of(path, lines[i].number);
      const auto f = split_tabs(lines[i].text);
      if (f.size() < need_cols)
        fail("{}: {} tab-separated columns, expected at least {} ({})", where, f.size(), need_cols, kExpected);
      McDoc d;
      d.where = where;
      d.fields["question"] = f[c_stem];
      const std::string& ch = f[c_choices];
      size_t pos[4];
      size_t from = 0;
      for (int k = 0; k < 4; ++k) {
        const std::string marker = std::string("(") + static_cast<char>('A' + k) + ")";
        pos[k] = ch.find(marker, from);
        if (pos[k] == std::string::npos)
          fail("{}: choices '{}' lack the marker {} (expected '(A) .. (B) .. (C) .. (D) ..')", where, ch, marker);
        from = pos[k] + 3;
      }
      for (int k = 0; k < 4; ++k) {
        const size_t b = pos[k] + 3, e = k < 3 ? pos[k + 1] : ch.size();
        d.choices.push_back(py_strip(ch.substr(b, e - b)));
      }
      const std::string key = py_strip(f[c_key]);
      if (key.size() != 1 || key[0] < 'A' || key[0] > 'D')
        fail("{}: answer key '{}' out of range: expected a letter A-D", where, key);
      d.gold = key[0] - 'A';
      out.push_back(std::move(d));
    }
    if (out.empty()) fail("{}: no records after the header ({})", path, kExpected);
    return out;
  }
  static const char* kExpected =
      "OpenBookQA JSONL: {\"query\", \"choices\": [4 strings], \"gold\": 0-3} or the release layout "
      "{\"question\": {\"stem\", \"choices\"}, \"answerKey\"}";
  for (const auto& [j, where] : read_json_lines(path, kExpected)) {
    if (j.contains("query")) {
      McDoc d;
      d.where = where;
      d.fields["question"] = need_string(j, "query", where, kExpected);
      d.choices = need_string_array(j, "choices", where, kExpected);
      d.gold = need_index(j, "gold", d.choices.size(), where, kExpected);
      out.push_back(std::move(d));
    } else if (j.contains("question")) {
      out.push_back(arc_doc(j, where, /*lstrip_key=*/true));  // lm-eval: answerKey.lstrip()
    } else {
      fail("{}: missing field 'query' (expected {})", where, kExpected);
    }
  }
  return out;
}

std::vector<McDoc> read_mmlu_dir(const std::string& dir) {
  static const char* kExpected = "MMLU CSV without header: question, A, B, C, D, answer letter";
  if (!dir_exists(dir)) fail("{}: MMLU folder not found (expected SUBJECT_<split>.csv files)", dir);
  std::vector<std::string> files;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (ends_with(n, ".csv") && n.rfind('_') != std::string::npos) files.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) fail("{}: no SUBJECT_<split>.csv files ({})", dir, kExpected);
  std::vector<McDoc> out;
  for (const auto& name : files) {
    const std::string path = path_join(dir, name);
    const std::string subject = name.substr(0, name.rfind('_'));
    const std::string text = read_task_text(path);
    if (py_strip(text).empty()) fail("{}: empty file (expected {})", path, kExpected);
    std::vector<int64_t> row_lines;
    auto rows = parse_csv(text, path, &row_lines);
    for (size_t r = 0; r < rows.size(); ++r) {
      const auto& row = rows[r];
      const std::string where = where_of(path, row_lines[r]);
      if (row.size() != 6) fail("{}: {} columns, expected 6 ({})", where, row.size(), kExpected);
      const std::string key = py_strip(row[5]);
      if (key.size() != 1 || key[0] < 'A' || key[0] > 'D')
        fail("{}: answer '{}' out of range: expected a letter A-D", where, row[5]);
      McDoc d;
      d.where = where;
      d.fields["question"] = row[0];
      d.fields["A"] = row[1];
      d.fields["B"] = row[2];
      d.fields["C"] = row[3];
      d.fields["D"] = row[4];
      d.fields["subject"] = subject;
      std::string words = subject;
      std::replace(words.begin(), words.end(), '_', ' ');
      d.fields["subject_words"] = words;
      d.gold = key[0] - 'A';
      out.push_back(std::move(d));
    }
  }
  return out;
}

}  // namespace llmc
