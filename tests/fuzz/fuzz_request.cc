// libFuzzer: request bodies of the OpenAI routes (src/serve/request_parse.h). The first
// byte picks the route (chat or completion); the rest is the body. Every input must give
// a turn or a RequestError, nothing else.
#include "fuzz_util.h"
#include "serve/request_parse.h"

std::vector<std::string> nsa_fuzz_seeds() {
  return {std::string("\0", 1) + R"({"prompt": "In the beginning", "max_tokens": 8, "temperature": 0.5,)"
                                 R"( "stop": ["\n", "Amen"], "seed": 3, "stream": true,)"
                                 R"( "stream_options": {"include_usage": true}, "conversation": "c-1"})",
          std::string("\1", 1) + R"({"messages": [{"role": "system", "content": "Be brief."},)"
                                 R"( {"role": "user", "content": [{"type": "text", "text": "Hi \u00e9"}]},)"
                                 R"( {"role": "assistant", "content": " ok"}], "max_completion_tokens": 4, "top_k": 5})",
          // libFuzzer's first finding (2026-12-04): a number beyond a double made nlohmann
          // throw out_of_range, which parse_body did not catch (std::terminate).
          std::string("\0", 1) + R"({"prompt": "a", "max_tokens": 66666666666e6666666})"};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool chat = data[0] & 1;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    const nsa::serve::ParsedCompletion p = nsa::serve::parse_completion(body, chat);
    for (std::int32_t t : p.turn.tokens)
      if (t < 0 || t > 255) __builtin_trap();  // bytes only
  } catch (const nsa::serve::RequestError& e) {
    if (e.status() != 400) __builtin_trap();
  }
  return 0;
}
