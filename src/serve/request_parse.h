// The bodies of POST /v1/completions and /v1/chat/completions (OpenAI's fields; unknown
// ones are ignored, as OpenAI's clients send many) into a turn. Untrusted bytes: every
// problem is a RequestError (400) naming the field, never a crash (tests/fuzz).
#pragma once

#include <string>

#include "serve/engine.h"

namespace nsa::serve {

struct ParsedCompletion {
  TurnRequest turn;            // tokens: the prompt's bytes, or the rendered chat
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

ParsedCompletion parse_completion(const std::string& body, bool chat);

}  // namespace nsa::serve
