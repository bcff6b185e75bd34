// The page at / of `nsa serve`: a chat with one conversation, and beside it, live, the last
// step's selection map (the blocks each layer and kv head chose, over the positions so far)
// and the gate bars per layer and branch, read from /v1/conversations/{id}/attention.
// /?conversation=ID watches an existing conversation.
#pragma once

#include <string>

namespace nsa::serve {

const std::string& monitor_page();

}  // namespace nsa::serve
