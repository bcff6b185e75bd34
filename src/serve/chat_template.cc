#include "serve/chat_template.h"

#include "serve/engine.h"

namespace nsa::serve {

std::string render_chat(const std::vector<ChatMessage>& messages, bool generation_prompt) {
  if (messages.empty()) throw RequestError(400, "messages must not be empty");
  std::string out;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "system" || m.role == "developer")
      out += "System: " + m.content + "\n";
    else if (m.role == "user")
      out += "User: " + m.content + "\n";
    else if (m.role == "assistant")
      out += "Assistant:" + m.content + "\n";
    else
      throw RequestError(400, "messages[" + std::to_string(i) + "].role '" + m.role +
                                  "' is not one of system, developer, user, assistant");
  }
  if (generation_prompt) out += "Assistant:";
  return out;
}

}  // namespace nsa::serve
