// Chat prompt formatting. The model's tokenizer_config.json carries a Jinja chat template; we
// recognise the families we know from it and format natively (no Jinja engine):
//   llama3: <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>...
//   llama2: <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
//   plain (unknown family or no template): "{role}: {content}\n" per message, then "assistant:".
#pragma once

#include <string>
#include <vector>

#include "api/openai_types.h"

namespace kvasir::api {

enum class ChatFormat { kPlain, kLlama2, kLlama3 };

// From the text of tokenizer_config.json ("" or unparsable -> kPlain).
ChatFormat DetectChatFormat(const std::string& tokenizer_config_json);
const char* ChatFormatName(ChatFormat f);

struct ChatPrompt {
  std::string text;  // special tokens written out; encode with special-token splitting
  bool add_bos;      // whether the encoder should prepend BOS (false when the text has it)
};

ChatPrompt ApplyChatTemplate(ChatFormat format, const std::vector<ChatMessage>& messages,
                             bool add_generation_prompt);

}  // namespace kvasir::api
