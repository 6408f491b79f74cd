// The official OpenAI client against a Kvasir server: a streamed completion with usage, a
// streamed chat completion, a plain completion, and an error. Exits non-zero on any mismatch.
// usage: node client.mjs BASE_URL (e.g. http://127.0.0.1:8000/v1)
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.argv[2], apiKey: "test-key", maxRetries: 0 });
const fail = (msg) => { console.error("FAIL: " + msg); process.exit(1); };

const models = await client.models.list();
const model = models.data[0].id;

let text = "", usage = null, finish = null;
const stream = await client.completions.create({
  model, prompt: "Once upon a time", max_tokens: 24, temperature: 0, stream: true,
  stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) { text += c.text; if (c.finish_reason) finish = c.finish_reason; }
}
if (!text.startsWith(", there was")) fail("completion text: " + JSON.stringify(text));
if (!usage || usage.completion_tokens !== 24 || usage.prompt_tokens !== 5) fail("usage " + JSON.stringify(usage));
if (finish !== "length") fail("finish " + finish);

const plain = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 24, temperature: 0 });
if (plain.choices[0].text !== text) fail("stream and non-stream differ");

let chat = "", role = null;
const cs = await client.chat.completions.create({
  model, messages: [{ role: "user", content: "Tell me a story" }], max_tokens: 16, stream: true, seed: 3,
});
for await (const chunk of cs) {
  const d = chunk.choices[0]?.delta;
  if (d?.role) role = d.role;
  if (d?.content) chat += d.content;
}
if (role !== "assistant" || chat.length === 0) fail("chat stream: " + role + " " + JSON.stringify(chat));

try {
  await client.completions.create({ model, prompt: "x", top_p: 5 });
  fail("top_p 5 accepted");
} catch (e) {
  if (!(e instanceof OpenAI.BadRequestError)) fail("expected BadRequestError, got " + e);
}
console.log("OK", JSON.stringify({ text, chat }));
