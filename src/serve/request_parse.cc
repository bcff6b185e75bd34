#include "serve/request_parse.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "model/data/corpus.h"
#include "serve/chat_template.h"

namespace nsa::serve {
namespace {

using json = nlohmann::json;

// Typed reads of optional fields: a present field of the wrong type is a 400 naming it.
template <class T>
T field(const json& body, const char* name, T fallback) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return fallback;
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) throw RequestError(400, std::string("'") + name + "' must be a boolean");
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string()) throw RequestError(400, std::string("'") + name + "' must be a string");
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!it->is_number()) throw RequestError(400, std::string("'") + name + "' must be a number");
  } else {
    if (!it->is_number_integer() && !(it->is_number_float() && it->get<double>() == std::floor(it->get<double>())))
      throw RequestError(400, std::string("'") + name + "' must be an integer");
  }
  return it->get<T>();
}

Sampling sampling_of(const json& body, bool chat) {
  Sampling s;
  s.max_tokens = field<std::int64_t>(body, "max_tokens", 16);
  if (chat) s.max_tokens = field<std::int64_t>(body, "max_completion_tokens", s.max_tokens);
  s.temperature = field<double>(body, "temperature", 1.0);
  s.top_k = static_cast<int>(field<std::int64_t>(body, "top_k", 0));
  s.seed = static_cast<std::uint64_t>(field<std::int64_t>(body, "seed", 0));
  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      s.stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const json& x : *it) {
        if (!x.is_string()) throw RequestError(400, "'stop' must be a string or an array of strings");
        s.stop.push_back(x.get<std::string>());
      }
    } else {
      throw RequestError(400, "'stop' must be a string or an array of strings");
    }
  }
  if (field<std::int64_t>(body, "n", 1) != 1) throw RequestError(400, "'n' other than 1 is not supported");
  return s;
}

json parse_body(const std::string& text) {
  // nlohmann reads a NUL byte as the end of input, which would let '{...}\0junk' pass.
  if (const std::size_t nul = text.find('\0'); nul != std::string::npos)
    throw RequestError(400, "the body is not valid JSON: a NUL byte at byte " + std::to_string(nul));
  json body;
  try {
    body = json::parse(text);
  } catch (const json::exception& e) {  // a syntax error, or a number too large for a double (1e999)
    throw RequestError(400, std::string("the body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw RequestError(400, "the body must be a JSON object");
  return body;
}

std::string prompt_of(const json& body) {
  auto it = body.find("prompt");
  if (it == body.end()) throw RequestError(400, "'prompt' is required");
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array() && it->size() == 1 && (*it)[0].is_string()) return (*it)[0].get<std::string>();
  throw RequestError(400, "'prompt' must be a string (or an array of one string)");
}

std::vector<ChatMessage> messages_of(const json& body) {
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array()) throw RequestError(400, "'messages' must be an array");
  std::vector<ChatMessage> out;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw RequestError(400, at + " must be an object");
    auto role = m.find("role"), content = m.find("content");
    if (role == m.end() || !role->is_string()) throw RequestError(400, at + ".role must be a string");
    std::string text;
    if (content != m.end() && content->is_string()) {
      text = content->get<std::string>();
    } else if (content != m.end() && content->is_array()) {  // [{"type": "text", "text": ...}]
      for (const json& part : *content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
          throw RequestError(400, at + ".content parts must be {\"type\": \"text\", \"text\": ...}");
        text += part["text"].get<std::string>();
      }
    } else if (content != m.end() && !content->is_null()) {
      throw RequestError(400, at + ".content must be a string");
    }
    out.push_back({role->get<std::string>(), text});
  }
  return out;
}

}  // namespace

ParsedCompletion parse_completion(const std::string& text, bool chat) {
  const json body = parse_body(text);
  ParsedCompletion p;
  p.turn.sampling = sampling_of(body, chat);
  p.turn.conversation = field<std::string>(body, "conversation", "");
  p.turn.tokens = model::encode_bytes(chat ? render_chat(messages_of(body)) : prompt_of(body));
  p.stream = field<bool>(body, "stream", false);
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) throw RequestError(400, "'stream_options' must be an object");
    p.include_usage = field<bool>(*it, "include_usage", false);
  }
  return p;
}

}  // namespace nsa::serve
