// Entry points of the serving roles (DESIGN.md, "The three roles"):
//   kvasir serve      all roles in one process, in-process links (the embedded default)
//   kvasir router     OpenAI HTTP + gRPC front end, placement over decoders, KV directory
//   kvasir decoder    weights, continuous batching, dense layers, sampling
//   kvasir attention  KV pool and partial attention
// `kvasir cluster` (cluster_launcher.h) starts router + decoders + attention workers.
#pragma once

namespace kvasir {

int ServeMain(int argc, char** argv);
int RouterMain(int argc, char** argv);
int DecoderMain(int argc, char** argv);
int AttentionMain(int argc, char** argv);

}  // namespace kvasir
