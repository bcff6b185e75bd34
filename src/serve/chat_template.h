// The chat template of the byte-level models: messages as plain text, so that a reply's
// text is exactly what follows the generation prompt in the cache, and a client that
// resends the history with that reply extends the cached tokens (automatic prefix reuse).
//
//   system / user message:  "System: " + content + "\n" / "User: " + content + "\n"
//   assistant message:      "Assistant:" + content + "\n"   (the reply as generated)
//   generation prompt:      "Assistant:"
#pragma once

#include <string>
#include <vector>

namespace nsa::serve {

struct ChatMessage {
  std::string role;  // "system", "developer" (as system), "user", "assistant"
  std::string content;
};

// Throws RequestError (400) for an unknown role or no messages.
std::string render_chat(const std::vector<ChatMessage>& messages, bool generation_prompt = true);

}  // namespace nsa::serve
