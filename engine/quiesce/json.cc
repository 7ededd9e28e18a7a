#include "engine/quiesce/json.h"

#include <cstdio>
#include <cstdlib>

namespace strata::quiesce::internal {
namespace {

class Parser {
 public:
  Parser(std::string_view t, const std::string& what) : t_(t), what_(what) {}

  Result<Json> Document() {
    Json v;
    STRATA_RETURN_IF_ERROR(Value(&v, 0));
    Ws();
    if (i_ != t_.size()) return Err("trailing characters after the value");
    return v;
  }

 private:
  Status Err(const std::string& m) const {
    return Status::Corruption(what_ + ": byte " + std::to_string(i_) + ": " + m);
  }
  void Ws() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\t' || t_[i_] == '\n' || t_[i_] == '\r'))
      ++i_;
  }
  bool Lit(std::string_view w) {
    if (t_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  Status Value(Json* v, int depth) {
    if (depth > 64) return Err("nesting deeper than 64");
    Ws();
    if (i_ >= t_.size()) return Err("unexpected end of input");
    char c = t_[i_];
    if (c == '{') return Object(v, depth);
    if (c == '[') return Array(v, depth);
    if (c == '"') {
      v->type = Json::Type::kString;
      return String(&v->string);
    }
    if (Lit("true")) {
      v->type = Json::Type::kBool;
      v->boolean = true;
      return Status::Ok();
    }
    if (Lit("false")) {
      v->type = Json::Type::kBool;
      return Status::Ok();
    }
    if (Lit("null")) {
      v->type = Json::Type::kNull;
      return Status::Ok();
    }
    if (c == '-' || (c >= '0' && c <= '9')) return Number(v);
    return Err(std::string("unexpected character '") + c + "'");
  }
  Status Number(Json* v) {
    size_t start = i_;
    if (t_[i_] == '-') ++i_;
    while (i_ < t_.size() && ((t_[i_] >= '0' && t_[i_] <= '9') || t_[i_] == '.' || t_[i_] == 'e' ||
                              t_[i_] == 'E' || t_[i_] == '+' || t_[i_] == '-'))
      ++i_;
    std::string s(t_.substr(start, i_ - start));
    char* end = nullptr;
    v->number = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size()) {
      i_ = start;
      return Err("bad number '" + s + "'");
    }
    v->type = Json::Type::kNumber;
    return Status::Ok();
  }
  static void Utf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  Status String(std::string* out) {
    ++i_;  // opening quote
    while (i_ < t_.size()) {
      char c = t_[i_++];
      if (c == '"') return Status::Ok();
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (i_ >= t_.size()) break;
      char e = t_[i_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out->push_back(e);
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          if (t_.size() - i_ < 4) return Err("truncated \\u escape");
          uint32_t cp = 0;
          for (int k = 0; k < 4; ++k) {
            char h = t_[i_++];
            cp <<= 4;
            if (h >= '0' && h <= '9')
              cp |= static_cast<uint32_t>(h - '0');
            else if (h >= 'a' && h <= 'f')
              cp |= static_cast<uint32_t>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F')
              cp |= static_cast<uint32_t>(h - 'A' + 10);
            else
              return Err("bad hex digit in \\u escape");
          }
          Utf8(cp, out);  // surrogate pairs are kept as two code units
          break;
        }
        default:
          return Err(std::string("bad escape '\\") + e + "'");
      }
    }
    return Err("unterminated string");
  }
  Status Array(Json* v, int depth) {
    v->type = Json::Type::kArray;
    ++i_;
    Ws();
    if (i_ < t_.size() && t_[i_] == ']') {
      ++i_;
      return Status::Ok();
    }
    for (;;) {
      Json e;
      STRATA_RETURN_IF_ERROR(Value(&e, depth + 1));
      v->array.push_back(std::move(e));
      Ws();
      if (i_ >= t_.size()) return Err("unterminated array");
      if (t_[i_] == ',') {
        ++i_;
        continue;
      }
      if (t_[i_] == ']') {
        ++i_;
        return Status::Ok();
      }
      return Err("expected ',' or ']'");
    }
  }
  Status Object(Json* v, int depth) {
    v->type = Json::Type::kObject;
    ++i_;
    Ws();
    if (i_ < t_.size() && t_[i_] == '}') {
      ++i_;
      return Status::Ok();
    }
    for (;;) {
      Ws();
      if (i_ >= t_.size() || t_[i_] != '"') return Err("expected a member name");
      std::string key;
      STRATA_RETURN_IF_ERROR(String(&key));
      Ws();
      if (i_ >= t_.size() || t_[i_] != ':') return Err("expected ':'");
      ++i_;
      Json e;
      STRATA_RETURN_IF_ERROR(Value(&e, depth + 1));
      v->object.emplace_back(std::move(key), std::move(e));
      Ws();
      if (i_ >= t_.size()) return Err("unterminated object");
      if (t_[i_] == ',') {
        ++i_;
        continue;
      }
      if (t_[i_] == '}') {
        ++i_;
        return Status::Ok();
      }
      return Err("expected ',' or '}'");
    }
  }

  std::string_view t_;
  const std::string& what_;
  size_t i_ = 0;
};

}  // namespace

const Json* Json::Find(std::string_view key) const {
  for (const auto& [k, v] : object) {
    if (k == key) return &v;
  }
  return nullptr;
}

Result<Json> ParseJson(std::string_view text, const std::string& what) {
  return Parser(text, what).Document();
}

std::string JsonQuote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(c);
        }
    }
  }
  return out + "\"";
}

}  // namespace strata::quiesce::internal
