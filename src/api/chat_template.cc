#include "api/chat_template.h"

#include "nlohmann/json.hpp"

namespace kvasir::api {

ChatFormat DetectChatFormat(const std::string& tokenizer_config_json) {
  nlohmann::json j = nlohmann::json::parse(tokenizer_config_json, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("chat_template")) return ChatFormat::kPlain;
  std::string t;
  const auto& ct = j["chat_template"];
  if (ct.is_string()) {
    t = ct.get<std::string>();
  } else if (ct.is_array()) {  // [{"name": "default", "template": ...}, ...]
    for (const auto& e : ct) {
      if (e.is_object() && e.value("name", "") == "default" && e.contains("template") &&
          e["template"].is_string()) {
        t = e["template"].get<std::string>();
      }
    }
  }
  if (t.find("<|start_header_id|>") != std::string::npos) return ChatFormat::kLlama3;
  if (t.find("[INST]") != std::string::npos) return ChatFormat::kLlama2;
  return ChatFormat::kPlain;
}

const char* ChatFormatName(ChatFormat f) {
  switch (f) {
    case ChatFormat::kLlama3: return "llama3";
    case ChatFormat::kLlama2: return "llama2";
    case ChatFormat::kPlain: return "plain";
  }
  return "?";
}

ChatPrompt ApplyChatTemplate(ChatFormat format, const std::vector<ChatMessage>& messages,
                             bool add_generation_prompt) {
  ChatPrompt p;
  switch (format) {
    case ChatFormat::kLlama3: {
      p.text = "<|begin_of_text|>";
      for (const ChatMessage& m : messages) {
        std::string role = m.role == "developer" ? "system" : m.role == "tool" ? "ipython" : m.role;
        p.text += "<|start_header_id|>" + role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
      }
      if (add_generation_prompt) p.text += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      p.add_bos = false;
      return p;
    }
    case ChatFormat::kLlama2: {
      // System text is folded into the first user turn, as Meta's template does.
      std::string system;
      size_t i = 0;
      if (!messages.empty() && (messages[0].role == "system" || messages[0].role == "developer")) {
        system = messages[0].content;
        i = 1;
      }
      bool first_user = true;
      for (; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        if (m.role == "assistant") {
          p.text += " " + m.content + " </s>";
          continue;
        }
        std::string content = m.content;
        if (first_user && !system.empty()) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
        first_user = false;
        p.text += "<s>[INST] " + content + " [/INST]";
      }
      if (p.text.empty()) p.text = "<s>";
      p.add_bos = false;
      return p;
    }
    case ChatFormat::kPlain:
      for (const ChatMessage& m : messages) p.text += m.role + ": " + m.content + "\n";
      if (add_generation_prompt) p.text += "assistant:";
      p.add_bos = true;
      return p;
  }
  return p;
}

}  // namespace kvasir::api
