#include "tools/bench/bench_serve.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "tools/bench/arrivals.h"
#include "tools/bench/dataset.h"
#include "tools/bench/grpc_stream_client.h"
#include "tools/bench/http_stream_client.h"
#include "tools/bench/metrics.h"
#include "tools/bench/openai_request.h"
#include "tools/bench/progress_bar.h"
#include "tools/bench/report.h"
#include "tools/bench/svg_plot.h"
#include "tools/bench/token_counter.h"

namespace kvasir::bench {
namespace {

constexpr char kUsage[] = R"(usage: kvasir bench serve [options]

Online serving benchmark with the flags, metrics and output of `vllm bench serve`.

Server:
  --backend {openai,openai-chat,kvasir-grpc}   (default openai)
  --base-url URL            server base URL (else http://HOST:PORT); for kvasir-grpc the
                            gRPC HOST:PORT (http:// is stripped, https:// means TLS)
  --host HOST               (default 127.0.0.1)      --port PORT (default 8000)
  --endpoint PATH           (default /v1/completions; /v1/chat/completions for openai-chat;
                            kvasir-grpc sends chat messages when it ends in chat/completions)
  --model NAME              (default: first model of GET /v1/models; kvasir-grpc: the
                            server's model, labelled "kvasir")
  --served-model-name NAME  model name sent in requests (default --model)
  --api-key KEY             Authorization: Bearer KEY (default $OPENAI_API_KEY)
  --header KEY=VALUE ...    extra request headers
  --request-timeout SEC     per-request timeout (default 21600)
  --num-warmups N           send the first request N times before the run (default 0)
  --insecure                do not verify TLS certificates (https)
Dataset:
  --dataset-name {random,sharegpt,sonnet-like,custom}   (default random)
  --dataset-path PATH       --num-prompts N (default 1000)  --seed N (default 0)
  --input-len N / --output-len N   general lengths (map to the dataset's own flags)
  --random-input-len N (1024)  --random-output-len N (128)  --random-range-ratio R (0.0)
  --random-prefix-len N (0)    --sharegpt-output-len N      --custom-output-len N (256)
  --sonnet-input-len N (550)   --sonnet-output-len N (150)  --sonnet-prefix-len N (200)
  --tokenizer PATH          Kvasir tokenizer (model dir or tokenizer file) for exact counts
Traffic:
  --request-rate R          requests/s, inf sends all at once (default inf)
  --burstiness B            gamma shape; 1 = Poisson (default 1.0)
  --max-concurrency N       at most N requests in flight
  --ignore-eos              (implied for the random dataset)
  --temperature T --top-p P --top-k K --extra-body JSON   sampling / extra request fields
Results:
  --goodput KEY:MS ...      SLOs for goodput, KEY in ttft, tpot, e2el
  --percentile-metrics LIST (default ttft,tpot,itl; also e2el, client_queue_time,
                            e2el_including_client_queue)
  --metric-percentiles LIST (default 99)
  --save-result  --save-detailed  --result-dir DIR  --result-filename NAME  --label NAME
  --metadata KEY=VALUE ...  --plot FILE.svg|FILE.html  --disable-tqdm
)";

struct Flags {
  std::map<std::string, std::string> values;
  std::map<std::string, std::vector<std::string>> lists;
  std::set<std::string> bools;
};

const std::set<std::string>& ValueFlags() {
  static const std::set<std::string>* f = new std::set<std::string>{"backend",
                                                                    "base-url",
                                                                    "host",
                                                                    "port",
                                                                    "endpoint",
                                                                    "model",
                                                                    "served-model-name",
                                                                    "api-key",
                                                                    "request-timeout",
                                                                    "dataset-name",
                                                                    "dataset-path",
                                                                    "num-prompts",
                                                                    "seed",
                                                                    "input-len",
                                                                    "output-len",
                                                                    "random-input-len",
                                                                    "random-output-len",
                                                                    "random-range-ratio",
                                                                    "random-prefix-len",
                                                                    "sharegpt-output-len",
                                                                    "custom-output-len",
                                                                    "sonnet-input-len",
                                                                    "sonnet-output-len",
                                                                    "sonnet-prefix-len",
                                                                    "tokenizer",
                                                                    "request-rate",
                                                                    "burstiness",
                                                                    "max-concurrency",
                                                                    "temperature",
                                                                    "top-p",
                                                                    "top-k",
                                                                    "extra-body",
                                                                    "percentile-metrics",
                                                                    "metric-percentiles",
                                                                    "result-dir",
                                                                    "result-filename",
                                                                    "label",
                                                                    "plot",
                                                                    "request-id-prefix",
                                                                    "num-warmups",
                                                                    "ready-check-timeout-sec"};
  return *f;
}
const std::set<std::string>& ListFlags() {
  static const std::set<std::string>* f =
      new std::set<std::string>{"goodput", "metadata", "header"};
  return *f;
}
const std::set<std::string>& BoolFlags() {
  static const std::set<std::string>* f = new std::set<std::string>{
      "ignore-eos", "save-result", "save-detailed", "disable-tqdm", "help", "insecure"};
  return *f;
}

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h") arg = "--help";
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    for (char& c : name) {
      if (c == '_') c = '-';
    }
    if (BoolFlags().count(name)) {
      if (inline_value)
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      flags.bools.insert(name);
    } else if (ValueFlags().count(name)) {
      if (inline_value) {
        flags.values[name] = *inline_value;
      } else if (i + 1 < argc) {
        flags.values[name] = argv[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
    } else if (ListFlags().count(name)) {
      auto& list = flags.lists[name];
      if (inline_value) list.push_back(*inline_value);
      while (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0)
        list.push_back(argv[++i]);
      if (list.empty())
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs values"));
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown option --", name));
    }
  }
  return flags;
}

absl::StatusOr<double> GetDouble(const Flags& f, const std::string& name, double def) {
  auto it = f.values.find(name);
  if (it == f.values.end()) return def;
  const std::string& v = it->second;
  if (v == "inf" || v == "Inf" || v == "infinity") return std::numeric_limits<double>::infinity();
  double d;
  if (!absl::SimpleAtod(v, &d)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": not a number: '", v, "'"));
  }
  return d;
}

absl::StatusOr<int> GetInt(const Flags& f, const std::string& name, int def) {
  auto it = f.values.find(name);
  if (it == f.values.end()) return def;
  int v;
  if (!absl::SimpleAtoi(it->second, &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, ": not an integer: '", it->second, "'"));
  }
  return v;
}

std::string GetStr(const Flags& f, const std::string& name, const std::string& def = "") {
  auto it = f.values.find(name);
  return it == f.values.end() ? def : it->second;
}

absl::StatusOr<GoodputConfig> ParseGoodput(const std::vector<std::string>& items) {
  GoodputConfig g;
  for (const std::string& item : items) {
    std::vector<std::string> kv = absl::StrSplit(item, ':');
    double ms;
    if (kv.size() != 2 || !absl::SimpleAtod(kv[1], &ms)) {
      return absl::InvalidArgumentError(
          "Invalid format found for service level objectives. Specify service level objectives "
          "for goodput as \"KEY:VALUE\" pairs, where the key is a metric name, and the value is "
          "a number in milliseconds.");
    }
    if (kv[0] != "ttft" && kv[0] != "tpot" && kv[0] != "e2el") {
      return absl::InvalidArgumentError(absl::StrCat(
          "Invalid metric name found, ", kv[0], ": ", kv[1],
          ". The service level objective name should be one of ['ttft', 'tpot', 'e2el']."));
    }
    if (ms < 0) {
      return absl::InvalidArgumentError(absl::StrCat("Invalid value found, ", kv[0], ": ", kv[1],
                                                     ". The service level objective value should "
                                                     "be non-negative."));
    }
    g[kv[0]] = ms;
  }
  return g;
}

std::string NowStamp() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%d-%H%M%S", &tm);
  return buf;
}

absl::Status Run(const Flags& f) {
  const std::string backend = GetStr(f, "backend", "openai");
  if (backend != "openai" && backend != "openai-chat" && backend != "kvasir-grpc") {
    return absl::InvalidArgumentError(absl::StrCat(
        "Unknown backend: ", backend, " (choose from openai, openai-chat, kvasir-grpc)"));
  }
  const bool grpc = backend == "kvasir-grpc";
  auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  // kvasir-grpc has no endpoint; --endpoint .../chat/completions picks the chat input.
  const ApiKind kind =
      backend == "openai-chat" || (grpc && ends_with(GetStr(f, "endpoint"), "chat/completions"))
          ? ApiKind::kChatCompletions
          : ApiKind::kCompletions;
  const std::string endpoint =
      GetStr(f, "endpoint",
             kind == ApiKind::kChatCompletions ? "/v1/chat/completions" : "/v1/completions");
  const std::string expect = kind == ApiKind::kChatCompletions ? "chat/completions" : "completions";
  if (!grpc && !ends_with(endpoint, expect)) {
    return absl::InvalidArgumentError(
        absl::StrCat(kind == ApiKind::kChatCompletions ? "OpenAI Chat Completions API"
                                                       : "OpenAI Completions API",
                     " URL must end with '", expect, "' (got --endpoint ", endpoint, ")"));
  }
  std::string base_url = GetStr(f, "base-url");
  if (base_url.empty()) {
    ASSIGN_OR_RETURN(int port, GetInt(f, "port", 8000));
    std::string host = GetStr(f, "host", "127.0.0.1");
    if (host.find(':') != std::string::npos && host.front() != '[')
      host = absl::StrCat("[", host, "]");
    base_url = absl::StrCat("http://", host, ":", port);
  }
  while (!base_url.empty() && base_url.back() == '/') base_url.pop_back();
  const std::string api_url = base_url + endpoint;
  GrpcClientOptions gopt;
  if (grpc) {
    ASSIGN_OR_RETURN(gopt.target, GrpcTargetFromUrl(base_url, &gopt.use_tls));
  }

  std::vector<std::string> headers;
  std::string api_key = GetStr(f, "api-key");
  if (api_key.empty()) {
    if (const char* env = std::getenv("OPENAI_API_KEY")) api_key = env;
  }
  if (!api_key.empty()) {
    headers.push_back(absl::StrCat("Authorization: Bearer ", api_key));
    gopt.metadata.emplace_back("authorization", absl::StrCat("Bearer ", api_key));
  }
  if (auto it = f.lists.find("header"); it != f.lists.end()) {
    for (const std::string& h : it->second) {
      const size_t eq = h.find('=');
      if (eq == std::string::npos) {
        return absl::InvalidArgumentError("Invalid header format. Please use KEY=VALUE format.");
      }
      headers.push_back(absl::StrCat(h.substr(0, eq), ": ", h.substr(eq + 1)));
      std::string key = h.substr(0, eq);  // gRPC metadata keys are lowercase
      for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      gopt.metadata.emplace_back(std::move(key), h.substr(eq + 1));
    }
  }
  ASSIGN_OR_RETURN(double request_timeout, GetDouble(f, "request-timeout", 6 * 3600));

  RaiseFileLimit();
  std::string model_id = GetStr(f, "model");
  // What the results are labelled with: the model, or for kvasir-grpc without --model
  // (the server then uses its own model), "kvasir".
  std::string model_label = model_id;
  if (grpc && model_id.empty()) {
    model_label = "kvasir";
    std::printf("Model not specified: the server's model is used (results labelled '%s')\n",
                model_label.c_str());
  } else if (model_id.empty()) {
    std::printf("Model not specified, fetching first model from server...\n");
    auto body = HttpGet(base_url + "/v1/models", headers, 30, f.bools.count("insecure") > 0);
    if (!body.ok()) {
      return absl::UnavailableError(absl::StrCat("Failed to fetch models from server at ", base_url,
                                                 "/v1/models. Check that the server "
                                                 "is running and the URL is correct. Error: ",
                                                 body.status().message()));
    }
    nlohmann::json j = nlohmann::json::parse(*body, nullptr, false);
    if (j.is_discarded() || !j.contains("data") || !j["data"].is_array() || j["data"].empty() ||
        !j["data"][0].contains("id") || !j["data"][0]["id"].is_string()) {
      return absl::UnavailableError(absl::StrCat("No models found on the server at ", base_url));
    }
    model_id = model_label = j["data"][0]["id"].get<std::string>();
    std::printf("First model name: %s, first model id: %s\n", model_id.c_str(), model_id.c_str());
  }
  const std::string model_name = GetStr(f, "served-model-name", model_id);

  std::unique_ptr<TokenCounter> counter;
  std::optional<std::string> tokenizer_id;
  if (std::string tok = GetStr(f, "tokenizer"); !tok.empty()) {
    ASSIGN_OR_RETURN(counter, LoadTokenCounter(tok));
    tokenizer_id = tok;
  } else {
    // As vLLM: without --tokenizer, the model's own tokenizer when --model is a local path.
    std::error_code ec;
    if (!model_id.empty() && std::filesystem::is_directory(model_id, ec)) {
      if (auto c = LoadTokenCounter(model_id); c.ok()) {
        counter = std::move(c).value();
        tokenizer_id = model_id;
      }
    }
  }
  if (!counter) {
    counter = MakeWordCounter();
    std::printf(
        "WARNING: no --tokenizer given: prompt lengths, and output lengths of responses without "
        "a usage chunk, are approximate (one token per word).\n");
  }

  DatasetOptions d;
  d.name = GetStr(f, "dataset-name", "random");
  d.path = GetStr(f, "dataset-path");
  ASSIGN_OR_RETURN(d.num_prompts, GetInt(f, "num-prompts", 1000));
  ASSIGN_OR_RETURN(int seed, GetInt(f, "seed", 0));
  d.seed = static_cast<uint64_t>(seed);
  ASSIGN_OR_RETURN(d.random_input_len, GetInt(f, "random-input-len", d.random_input_len));
  ASSIGN_OR_RETURN(d.random_output_len, GetInt(f, "random-output-len", d.random_output_len));
  ASSIGN_OR_RETURN(d.random_range_ratio, GetDouble(f, "random-range-ratio", 0.0));
  ASSIGN_OR_RETURN(d.random_prefix_len, GetInt(f, "random-prefix-len", 0));
  ASSIGN_OR_RETURN(d.sharegpt_output_len, GetInt(f, "sharegpt-output-len", -1));
  ASSIGN_OR_RETURN(d.custom_output_len, GetInt(f, "custom-output-len", 256));
  ASSIGN_OR_RETURN(d.sonnet_input_len, GetInt(f, "sonnet-input-len", d.sonnet_input_len));
  ASSIGN_OR_RETURN(d.sonnet_output_len, GetInt(f, "sonnet-output-len", d.sonnet_output_len));
  ASSIGN_OR_RETURN(d.sonnet_prefix_len, GetInt(f, "sonnet-prefix-len", d.sonnet_prefix_len));
  if (f.values.count("input-len")) {
    ASSIGN_OR_RETURN(d.random_input_len, GetInt(f, "input-len", 0));
  }
  if (f.values.count("output-len")) {
    ASSIGN_OR_RETURN(int out_len, GetInt(f, "output-len", 0));
    d.random_output_len = d.sharegpt_output_len = d.custom_output_len = out_len;
  }
  ASSIGN_OR_RETURN(std::vector<SampleRequest> requests, SampleRequests(d, *counter));

  // As vLLM: the random dataset ignores EOS so generation runs to the sampled length.
  const bool ignore_eos = f.bools.count("ignore-eos") || d.name == "random";
  GoodputConfig goodput;
  if (auto it = f.lists.find("goodput"); it != f.lists.end()) {
    ASSIGN_OR_RETURN(goodput, ParseGoodput(it->second));
  }
  ASSIGN_OR_RETURN(double rate,
                   GetDouble(f, "request-rate", std::numeric_limits<double>::infinity()));
  ASSIGN_OR_RETURN(double burstiness, GetDouble(f, "burstiness", 1.0));
  if (!(rate > 0)) return absl::InvalidArgumentError("--request-rate must be positive");
  if (!(burstiness > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("A positive burstiness factor is expected, but given ", burstiness, "."));
  }
  ASSIGN_OR_RETURN(int max_concurrency, GetInt(f, "max-concurrency", 0));
  if (f.values.count("max-concurrency") && max_concurrency <= 0) {
    return absl::InvalidArgumentError("--max-concurrency must be greater than 0");
  }

  nlohmann::json extra = nlohmann::json::object();
  for (const char* p : {"temperature", "top-p"}) {
    if (f.values.count(p)) {
      ASSIGN_OR_RETURN(double v, GetDouble(f, p, 0));
      std::string key = p;
      for (char& c : key) {
        if (c == '-') c = '_';
      }
      extra[key] = v;
    }
  }
  if (f.values.count("top-k")) {
    ASSIGN_OR_RETURN(int k, GetInt(f, "top-k", 0));
    extra["top_k"] = k;
  }
  if (std::string eb = GetStr(f, "extra-body"); !eb.empty()) {
    nlohmann::json j = nlohmann::json::parse(eb, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError("--extra-body must be a JSON object");
    }
    for (const auto& [k, v] : j.items()) extra[k] = v;
  }

  RunInfo info;
  info.backend = backend;
  if (f.values.count("label")) info.label = GetStr(f, "label");
  info.model_id = model_label;
  info.tokenizer_id = tokenizer_id;
  info.num_prompts = d.num_prompts;
  info.request_rate = rate;
  info.burstiness = burstiness;
  info.max_concurrency = max_concurrency;
  info.goodput = goodput;
  if (std::string pm = GetStr(f, "percentile-metrics"); !pm.empty()) {
    info.percentile_metrics = absl::StrSplit(pm, ',');
  }
  info.percentiles.clear();
  const std::vector<std::string> percentiles =
      absl::StrSplit(GetStr(f, "metric-percentiles", "99"), ',');
  for (const std::string& p : percentiles) {
    double v;
    if (!absl::SimpleAtod(p, &v) || v < 0 || v > 100) {
      return absl::InvalidArgumentError(
          absl::StrCat("--metric-percentiles: bad percentile '", p, "'"));
    }
    info.percentiles.push_back(v);
  }
  if (auto it = f.lists.find("metadata"); it != f.lists.end()) {
    for (const std::string& kv : it->second) {
      const size_t eq = kv.find('=');
      if (eq == std::string::npos) {
        return absl::InvalidArgumentError("Invalid metadata format. Please use KEY=VALUE format.");
      }
      info.metadata.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    }
  }

  std::mt19937_64 arrival_rng(d.seed);
  const std::vector<double> arrivals =
      ArrivalTimes(static_cast<int>(requests.size()), rate, burstiness, arrival_rng);
  const std::string id_prefix = GetStr(f, "request-id-prefix", "bench-");
  std::vector<HttpJob> jobs(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    RequestParams p;
    p.model = model_name;
    p.prompt = requests[i].prompt;
    p.max_tokens = requests[i].expected_output_len;
    p.ignore_eos = ignore_eos;
    p.extra_body = extra;
    jobs[i].body = BuildRequestBody(kind, p);
    jobs[i].prompt_len = requests[i].prompt_len;
    jobs[i].arrival_s = arrivals[i];
    jobs[i].request_id = absl::StrCat(id_prefix, i);
  }

  ClientOptions copt;
  copt.url = api_url;
  copt.kind = kind;
  copt.headers = headers;
  copt.max_concurrency = max_concurrency;
  copt.request_timeout_s = request_timeout;
  copt.insecure = f.bools.count("insecure") > 0;
  gopt.max_concurrency = max_concurrency;
  gopt.request_timeout_s = request_timeout;
  auto run_jobs = [&](const std::vector<HttpJob>& js,
                      std::function<void(int, int)> progress) -> absl::StatusOr<RunResult> {
    if (grpc) {
      gopt.on_progress = std::move(progress);
      return RunGrpcStreamingRequests(js, gopt);
    }
    copt.on_progress = std::move(progress);
    return RunStreamingRequests(js, copt);
  };

  ASSIGN_OR_RETURN(int num_warmups, GetInt(f, "num-warmups", 0));
  if (num_warmups > 0) {
    // As vLLM: the first request, num_warmups times, all at once (within --max-concurrency).
    std::printf("Warming up with %d requests...\n", num_warmups);
    std::fflush(stdout);
    std::vector<HttpJob> warmup(num_warmups, jobs[0]);
    for (HttpJob& w : warmup) w.arrival_s = 0;
    ProgressBar wbar(num_warmups, !f.bools.count("disable-tqdm"));
    ASSIGN_OR_RETURN(RunResult warm,
                     run_jobs(warmup, [&wbar](int done, int) { wbar.Update(done); }));
    wbar.Finish();
    int warm_failed = 0;
    std::string warm_error;
    for (const RequestOutput& o : warm.outputs) {
      if (o.success) continue;
      if (warm_failed++ == 0) warm_error = o.error;
    }
    if (warm_failed > 0) {
      std::printf("WARNING: %d of %d warmup requests failed: %s\n", warm_failed, num_warmups,
                  warm_error.c_str());
    }
    std::printf("Warmup run completed.\n");
  }

  std::printf("Starting main benchmark run...\n");
  std::printf("Traffic request rate: %s\n", PyFloat(rate).c_str());
  std::printf("Burstiness factor: %s (%s)\n", PyFloat(burstiness).c_str(),
              burstiness == 1.0 ? "Poisson process" : "Gamma distribution");
  std::printf("Maximum request concurrency: %s\n",
              max_concurrency > 0 ? std::to_string(max_concurrency).c_str() : "None");
  std::fflush(stdout);

  ProgressBar bar(static_cast<int>(jobs.size()), !f.bools.count("disable-tqdm"));
  ASSIGN_OR_RETURN(RunResult run, run_jobs(jobs, [&bar](int done, int) { bar.Update(done); }));
  bar.Finish();

  info.date = NowStamp();
  BenchmarkMetrics m =
      CalculateMetrics(run.outputs, run.duration_s, *counter, info.percentiles, goodput);
  if (m.completed == 0) {
    std::fprintf(stderr,
                 "WARNING: All requests failed. This is likely due to a misconfiguration on the "
                 "benchmark arguments.\n");
  }
  std::fputs(FormatReport(info, m, run.duration_s, run.outputs).c_str(), stdout);
  std::fflush(stdout);

  if (f.bools.count("save-result")) {
    std::string file = GetStr(f, "result-filename", DefaultResultFilename(info));
    if (std::string dir = GetStr(f, "result-dir"); !dir.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      file = (std::filesystem::path(dir) / file).string();
    }
    std::ofstream out(file);
    out << BuildResultJson(info, m, run.duration_s, run.outputs)
               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (!out) return absl::UnavailableError(absl::StrCat("cannot write result file ", file));
    std::fprintf(stderr, "Saved result to %s\n", file.c_str());
  }
  if (std::string plot = GetStr(f, "plot"); !plot.empty()) {
    RETURN_IF_ERROR(
        WritePlot(m,
                  absl::StrCat("kvasir bench serve: ", backend, ", ", model_label, ", rate ",
                               PyFloat(rate), ", ", m.completed, " ok / ", m.failed, " failed"),
                  plot));
    std::fprintf(stderr, "Saved plot to %s\n", plot.c_str());
  }
  return absl::OkStatus();
}

}  // namespace

}  // namespace kvasir::bench

namespace kvasir {

using bench::kUsage;
using bench::ParseFlags;
using bench::Run;

int RunBenchServe(int argc, char** argv) {
  auto flags = ParseFlags(argc, argv);
  if (!flags.ok()) {
    std::fprintf(stderr, "%s\nerror: %s\n", kUsage, std::string(flags.status().message()).c_str());
    return 2;
  }
  if (flags->bools.count("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  absl::Status s = Run(*flags);
  if (!s.ok()) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    return absl::IsInvalidArgument(s) ? 2 : 1;
  }
  return 0;
}

}  // namespace kvasir
