#!/usr/bin/env python3
"""Independent reference for the llama2.c tokenizer: a direct port of llama2.c run.c encode().

Reads tokenizer.bin and the corpus, writes one line of space-separated ids per corpus line.
bos=1, eos=0 as in llama2.c's generate(): every line starts with BOS (id 1), so the fixture
corresponds to Encode(line, /*add_bos=*/true). Like run.c, this rescans the whole sequence for the
best pair after every merge (quadratic, no heap), unlike the C++ implementation.

Usage (from the repository root):
  python3 tests/reference/llama2c_reference.py \
      ../shared/models/stories260K/tokenizer.bin tests/data/tokenizer/corpus.txt \
      tests/data/tokenizer/expected_llama2c_stories260K.txt
"""
import struct
import sys


def load(path):
    data = open(path, "rb").read()
    (max_token_length,) = struct.unpack_from("<i", data, 0)
    pos = 4
    vocab, scores = [], []
    while pos < len(data):
        score, length = struct.unpack_from("<fi", data, pos)
        pos += 8
        vocab.append(data[pos:pos + length])
        scores.append(score)
        pos += length
    return max_token_length, vocab, scores


def encode(text, vocab, scores, bos=True, eos=False):
    lookup = {}
    for i, piece in enumerate(vocab):
        lookup.setdefault(piece, i)
    tokens = []
    if bos:
        tokens.append(1)
    raw = text.encode("utf-8")
    # add_dummy_prefix is true by default in sentencepiece: prepend a space when non-empty.
    if raw:
        tokens.append(lookup[b" "])
    # UTF-8 codepoints: a leading byte followed by up to 3 continuation bytes.
    buf = b""
    for i, c in enumerate(raw):
        if (c & 0xC0) != 0x80:
            buf = b""
        buf += bytes([c])
        if i + 1 < len(raw) and (raw[i + 1] & 0xC0) == 0x80 and len(buf) < 4:
            continue
        if buf in lookup:
            tokens.append(lookup[buf])
        else:
            # byte_fallback: the first 3 vocab elements are <unk>, <s>, </s>
            tokens.extend(b + 3 for b in buf)
        buf = b""
    # Merge the best consecutive pair each iteration, according to the scores in vocab_scores.
    while True:
        best_score, best_id, best_idx = -1e10, -1, -1
        for i in range(len(tokens) - 1):
            merged = vocab[tokens[i]] + vocab[tokens[i + 1]]
            mid = lookup.get(merged, -1)
            if mid != -1 and scores[mid] > best_score:
                best_score, best_id, best_idx = scores[mid], mid, i
        if best_idx == -1:
            break
        tokens[best_idx:best_idx + 2] = [best_id]
    if eos:
        tokens.append(2)
    return tokens


def main():
    tokenizer_path, corpus_path, out_path = sys.argv[1:4]
    _, vocab, scores = load(tokenizer_path)
    text = open(corpus_path, "rb").read().decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    with open(out_path, "w", newline="\n") as f:
        for line in lines:
            f.write(" ".join(map(str, encode(line, vocab, scores, bos=True))) + "\n")
    print(f"{len(lines)} lines -> {out_path}")


if __name__ == "__main__":
    main()
