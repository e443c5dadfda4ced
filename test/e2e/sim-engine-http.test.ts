import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type MetricFamily, parsePrometheusText } from "../../extproc/src/engine/prom-parse.ts";
import { getPreset } from "../../extproc/src/sim/presets.ts";
import { ScaledClock } from "../../extproc/src/sim/scaled-clock.ts";
import { type SimEngineOptions, type SimServer, startSimServer } from "../../extproc/src/sim/sim-server.ts";

const TEST = getPreset("test");
const MODEL = TEST.model; // "sim/test-model"
const root = new URL("../../", import.meta.url).pathname;

// biome-ignore lint/suspicious/noExplicitAny: response bodies are asserted field by field
type Body = Record<string, any>;

const servers: SimServer[] = [];
async function start(options: Partial<SimEngineOptions> = {}): Promise<SimServer> {
  const server = await startSimServer({
    listen: "127.0.0.1:0",
    preset: TEST,
    clock: new ScaledClock(5),
    ...options,
  });
  servers.push(server);
  return server;
}
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

async function post(server: SimServer, path: string, body: unknown) {
  const response = await fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return response;
}

async function json(server: SimServer, path: string, body: unknown) {
  const response = await post(server, path, body);
  return { status: response.status, body: (await response.json()) as Body };
}

/** The data payloads of an SSE body, in order. */
function events(text: string): string[] {
  return text
    .split("\n\n")
    .filter((chunk) => chunk.trim() !== "")
    .map((chunk) => {
      assert.match(chunk, /^data: /, "every SSE event is a data line");
      return chunk.slice("data: ".length);
    });
}

async function scrape(server: SimServer) {
  const response = await fetch(`${server.url}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain/);
  const parsed = parsePrometheusText(await response.text());
  assert.deepEqual(parsed.errors, [], "the exposition parses cleanly");
  return parsed.families;
}

function family(families: ReadonlyMap<string, MetricFamily>, name: string): MetricFamily {
  const found = families.get(name);
  assert.ok(found, `${name} is exposed`);
  return found;
}

function value(
  families: ReadonlyMap<string, MetricFamily>,
  name: string,
  labels: Record<string, string> = {},
) {
  const base = families.has(name) ? name : name.replace(/_(bucket|sum|count)$/, "");
  const sample = family(families, base).samples.find(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  assert.ok(sample, `${name}${JSON.stringify(labels)} has a sample`);
  return sample.value;
}

const chat = (content: string, extra: Record<string, unknown> = {}) => ({
  model: MODEL,
  messages: [{ role: "user", content }],
  ...extra,
});

describe("sim-engine OpenAI API", () => {
  let server: SimServer;
  before(async () => {
    server = await start();
  });

  it("GET /v1/models lists the served model with max_model_len", async () => {
    const response = await fetch(`${server.url}/v1/models`);
    assert.equal(response.status, 200);
    const body = (await response.json()) as { object: string; data: Array<Record<string, unknown>> };
    assert.equal(body.object, "list");
    assert.equal(body.data.length, 1);
    assert.equal(body.data[0]?.id, MODEL);
    assert.equal(body.data[0]?.object, "model");
    assert.equal(body.data[0]?.owned_by, "vllm");
    assert.equal(body.data[0]?.max_model_len, 256);
  });

  it("non-streaming chat returns a chat.completion with exactly max_tokens under ignore_eos", async () => {
    const { status, body } = await json(
      server,
      "/v1/chat/completions",
      chat("hello there", { max_tokens: 7, ignore_eos: true }),
    );
    assert.equal(status, 200);
    assert.match(body.id, /^chatcmpl-[0-9a-f]{32}$/);
    assert.equal(body.object, "chat.completion");
    assert.equal(body.model, MODEL);
    assert.equal(typeof body.created, "number");
    assert.equal(body.choices.length, 1);
    const choice = body.choices[0];
    assert.equal(choice.index, 0);
    assert.equal(choice.message.role, "assistant");
    assert.equal(typeof choice.message.content, "string");
    assert.equal(choice.finish_reason, "length");
    assert.equal(body.usage.completion_tokens, 7);
    assert.ok(body.usage.prompt_tokens > 0);
    assert.equal(body.usage.total_tokens, body.usage.prompt_tokens + 7);
  });

  it("non-streaming completions return a text_completion; max_tokens caps natural lengths", async () => {
    const exact = await json(server, "/v1/completions", {
      model: MODEL,
      prompt: [1, 2, 3, 4, 5],
      max_tokens: 5,
      ignore_eos: true,
    });
    assert.equal(exact.status, 200);
    assert.match(exact.body.id, /^cmpl-/);
    assert.equal(exact.body.object, "text_completion");
    assert.equal(typeof exact.body.choices[0].text, "string");
    assert.equal(exact.body.choices[0].finish_reason, "length");
    assert.deepEqual(
      { prompt: exact.body.usage.prompt_tokens, completion: exact.body.usage.completion_tokens },
      { prompt: 5, completion: 5 },
      "a token-id prompt counts its ids",
    );

    for (let i = 0; i < 5; i++) {
      const capped = await json(server, "/v1/completions", {
        model: MODEL,
        prompt: "once upon",
        max_tokens: 3,
      });
      assert.equal(capped.status, 200);
      const tokens = capped.body.usage.completion_tokens;
      assert.ok(tokens >= 1 && tokens <= 3, `completion_tokens ${tokens} within max_tokens`);
      assert.equal(capped.body.choices[0].finish_reason, tokens === 3 ? "length" : "stop");
    }
  });

  it("n choices each get max_tokens; usage counts the prompt once", async () => {
    const { status, body } = await json(server, "/v1/completions", {
      prompt: [7, 7, 7],
      max_tokens: 4,
      n: 3,
      ignore_eos: true,
    });
    assert.equal(status, 200);
    assert.deepEqual(
      body.choices.map((c: { index: number }) => c.index),
      [0, 1, 2],
    );
    assert.equal(body.usage.prompt_tokens, 3);
    assert.equal(body.usage.completion_tokens, 12);
  });

  it("SSE chat streams deltas, one usage chunk when include_usage, and ends with [DONE]", async () => {
    const response = await post(
      server,
      "/v1/chat/completions",
      chat("stream me", {
        max_tokens: 6,
        ignore_eos: true,
        stream: true,
        stream_options: { include_usage: true },
      }),
    );
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
    const data = events(await response.text());
    assert.equal(data.at(-1), "[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    for (const chunk of chunks) {
      assert.equal(chunk.object, "chat.completion.chunk");
      assert.equal(chunk.model, MODEL);
      assert.equal(chunk.id, chunks[0].id, "one id for the whole stream");
    }
    assert.deepEqual(chunks[0].choices[0].delta, { role: "assistant", content: "" });
    const usageChunk = chunks.at(-1);
    assert.deepEqual(usageChunk.choices, []);
    assert.equal(usageChunk.usage.completion_tokens, 6);
    assert.equal(usageChunk.usage.total_tokens, usageChunk.usage.prompt_tokens + 6);
    const body = chunks.slice(0, -1);
    assert.ok(
      body.every((c) => c.usage === null),
      "without continuous_usage_stats content chunks carry usage: null",
    );
    const text = body.map((c) => c.choices[0].delta.content ?? "").join("");
    assert.equal(text.split("token ").length - 1, 6, "six tokens of content");
    assert.equal(body.at(-1).choices[0].finish_reason, "length");
    assert.ok(body.slice(0, -1).every((c) => c.choices[0].finish_reason === null));
  });

  it("SSE completions without include_usage carry no usage at all", async () => {
    const response = await post(server, "/v1/completions", {
      model: MODEL,
      prompt: "abc",
      max_tokens: 4,
      ignore_eos: true,
      stream: true,
    });
    assert.equal(response.status, 200);
    const data = events(await response.text());
    assert.equal(data.at(-1), "[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    assert.equal(chunks.length, 4, "one chunk per token");
    assert.ok(chunks.every((c) => c.object === "text_completion" && !("usage" in c)));
    assert.ok(chunks.every((c) => c.choices.length === 1));
    assert.equal(chunks.map((c) => c.choices[0].text).join(""), "token ".repeat(4));
  });

  it("stream_options without stream is a 400", async () => {
    const { status, body } = await json(
      server,
      "/v1/chat/completions",
      chat("x", { stream_options: { include_usage: true } }),
    );
    assert.equal(status, 400);
    assert.equal(body.error.param, "stream_options");
  });
});

describe("sim-engine vLLM error bodies", () => {
  let server: SimServer;
  before(async () => {
    server = await start();
  });

  const assertEnvelope = (body: Body, status: number, type: string) => {
    assert.deepEqual(Object.keys(body), ["error"]);
    assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
    assert.equal(body.error.code, status);
    assert.equal(body.error.type, type);
    assert.equal(typeof body.error.message, "string");
  };

  it("malformed JSON is a 400 Bad Request", async () => {
    const { status, body } = await json(server, "/v1/chat/completions", "{not json");
    assert.equal(status, 400);
    assertEnvelope(body, 400, "Bad Request");
    assert.match(body.error.message, /JSON/);
  });

  it("a missing required field is a 400 naming the field", async () => {
    const { status, body } = await json(server, "/v1/chat/completions", { model: MODEL });
    assert.equal(status, 400);
    assertEnvelope(body, 400, "Bad Request");
    assert.equal(body.error.param, "messages");
  });

  it("an unknown model is a 404 NotFoundError", async () => {
    const { status, body } = await json(server, "/v1/chat/completions", {
      ...chat("hi"),
      model: "no-such-model",
    });
    assert.equal(status, 404);
    assertEnvelope(body, 404, "NotFoundError");
    assert.equal(body.error.message, "The model `no-such-model` does not exist.");
  });

  it("a prompt beyond max_model_len is a 400 BadRequestError", async () => {
    const { status, body } = await json(server, "/v1/completions", {
      model: MODEL,
      prompt: Array.from({ length: 300 }, (_, i) => i),
      max_tokens: 1,
    });
    assert.equal(status, 400);
    assertEnvelope(body, 400, "BadRequestError");
    assert.match(body.error.message, /maximum context length is 256 tokens.*300 input tokens/);
  });

  it("prompt + max_tokens beyond max_model_len is a 400 on max_tokens", async () => {
    const { status, body } = await json(server, "/v1/completions", {
      model: MODEL,
      prompt: Array.from({ length: 100 }, () => 1),
      max_tokens: 157,
    });
    assert.equal(status, 400);
    assertEnvelope(body, 400, "BadRequestError");
    assert.equal(body.error.param, "max_tokens");
    assert.match(body.error.message, /157 > 256 - 100/);
  });

  it("a 200,000-token prompt on the H100 preset is vLLM's 400, and the engine keeps serving", async () => {
    const h100 = await start({ preset: getPreset("llama-3.1-8b-h100") });
    const { status, body } = await json(h100, "/v1/completions", {
      model: h100.engine.servedModelName,
      prompt: Array.from({ length: 200_000 }, () => 1),
      max_tokens: 16,
    });
    assert.equal(status, 400);
    assertEnvelope(body, 400, "BadRequestError");
    assert.equal(body.error.param, null);
    assert.equal(
      body.error.message,
      "This model's maximum context length is 131072 tokens. However, your request has 200000 input tokens. Please reduce the length of the input messages.",
    );
    assert.equal(h100.engine.runner.inFlight, 0, "the engine never saw it");
    assert.ok(h100.engine.model.idle);

    const next = await json(h100, "/v1/completions", {
      model: h100.engine.servedModelName,
      prompt: "hello",
      max_tokens: 3,
      ignore_eos: true,
    });
    assert.equal(next.status, 200);
    assert.equal(next.body.usage.completion_tokens, 3);
  });

  it("priority is refused unless --scheduling-policy priority", async () => {
    const refused = await json(server, "/v1/chat/completions", chat("hi", { priority: 1, max_tokens: 2 }));
    assert.equal(refused.status, 400);
    assertEnvelope(refused.body, 400, "BadRequestError");
    assert.match(refused.body.error.message, /Priority scheduling is not enabled/);

    const priority = await start({ schedulingPolicy: "priority" });
    const accepted = await json(
      priority,
      "/v1/chat/completions",
      chat("hi", { priority: -5, max_tokens: 2 }),
    );
    assert.equal(accepted.status, 200);
    assert.ok(accepted.body.usage.completion_tokens <= 2);
  });

  it("unknown paths are 404 and wrong methods 405", async () => {
    assert.equal((await fetch(`${server.url}/v1/nothing`)).status, 404);
    assert.equal((await fetch(`${server.url}/v1/chat/completions`)).status, 405);
  });
});

describe("sim-engine load delay", () => {
  it("/health and the API answer 503 while loading, then 200", async () => {
    const started = Date.now();
    const server = await start({ loadDelayMs: 400 });
    assert.equal(server.engine.ready, false);
    assert.equal((await fetch(`${server.url}/health`)).status, 503);
    const early = await json(server, "/v1/chat/completions", chat("hi", { max_tokens: 1 }));
    assert.equal(early.status, 503);
    assert.equal(early.body.error.code, 503);
    assert.equal((await fetch(`${server.url}/metrics`)).status, 200, "metrics are served while loading");
    await server.engine.whenReady;
    assert.ok(Date.now() - started >= 390, "the delay is real time, not engine time");
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
    const ready = await json(server, "/v1/chat/completions", chat("hi", { max_tokens: 1 }));
    assert.equal(ready.status, 200);
  });
});

describe("sim-engine /metrics", () => {
  const HISTOGRAMS = [
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
  ];

  it("v1: vLLM V1 names, types and labels, with values that follow the traffic", async () => {
    const server = await start({ servedModelName: "tenant-model" });
    const labels = { model_name: "tenant-model", engine: "0" };

    // A long stream in flight: the gauges show it.
    const response = await post(server, "/v1/completions", {
      model: "tenant-model",
      prompt: Array.from({ length: 40 }, () => 3),
      max_tokens: 60,
      ignore_eos: true,
      stream: true,
    });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await reader.read(); // first chunk: the request is running
    const during = await scrape(server);
    assert.equal(value(during, "vllm:num_requests_running", labels), 1);
    assert.equal(value(during, "vllm:num_requests_waiting", labels), 0);
    const kv = value(during, "vllm:kv_cache_usage_perc", labels);
    assert.ok(kv > 0 && kv <= 1, `kv_cache_usage_perc ${kv} is a 0..1 fraction`);
    assert.ok(kv >= Math.ceil(41 / 16) / 32, "at least the prompt's blocks are held");
    while (!(await reader.read()).done) {
      // drain the stream
    }
    const second = await json(server, "/v1/chat/completions", {
      ...chat("hi"),
      model: "tenant-model",
      max_tokens: 4,
      ignore_eos: true,
    });

    const families = await scrape(server);
    const types: Record<string, string> = {
      "vllm:num_requests_running": "gauge",
      "vllm:num_requests_waiting": "gauge",
      "vllm:kv_cache_usage_perc": "gauge",
      "vllm:prompt_tokens_total": "counter",
      "vllm:generation_tokens_total": "counter",
      "vllm:num_preemptions_total": "counter",
      "vllm:request_success_total": "counter",
      "vllm:cache_config_info": "gauge",
      ...Object.fromEntries(HISTOGRAMS.map((h) => [h, "histogram"])),
    };
    for (const [name, type] of Object.entries(types)) {
      const f = family(families, name);
      assert.equal(f.type, type, `${name} is a ${type}`);
      assert.ok(f.help.length > 0, `${name} has HELP`);
      for (const sample of f.samples) {
        // vllm:cache_config_info carries CacheConfig's fields plus engine, as in vLLM.
        if (name !== "vllm:cache_config_info") {
          assert.equal(sample.labels.model_name, "tenant-model", `${sample.name} has model_name`);
        }
        assert.equal(sample.labels.engine, "0", `${sample.name} has engine`);
      }
    }
    assert.equal(families.has("vllm:gpu_cache_usage_perc"), false, "the V0 name is gone in V1");
    assert.equal(value(families, "vllm:num_requests_running", labels), 0);
    assert.equal(value(families, "vllm:kv_cache_usage_perc", labels), 0, "an idle engine holds no KV");
    assert.equal(value(families, "vllm:generation_tokens_total", labels), 64);
    assert.equal(value(families, "vllm:prompt_tokens_total", labels), 40 + second.body.usage.prompt_tokens);
    assert.equal(value(families, "vllm:num_preemptions_total", labels), 0);
    assert.equal(value(families, "vllm:request_success_total", { ...labels, finished_reason: "length" }), 2);
    assert.equal(value(families, "vllm:request_success_total", { ...labels, finished_reason: "stop" }), 0);

    for (const name of HISTOGRAMS) {
      const samples = family(families, name).samples;
      const buckets = samples.filter((s) => s.name === `${name}_bucket`);
      assert.ok(buckets.length > 1, `${name}_bucket`);
      assert.equal(buckets.at(-1)?.labels.le, "+Inf");
      const counts = buckets.map((b) => b.value);
      assert.deepEqual(
        counts,
        [...counts].sort((a, b) => a - b),
        `${name} buckets are cumulative`,
      );
      assert.ok(samples.some((s) => s.name === `${name}_sum`));
      assert.equal(value(families, `${name}_count`, labels), counts.at(-1));
    }
    assert.equal(value(families, "vllm:time_to_first_token_seconds_count", labels), 2);
    assert.equal(value(families, "vllm:e2e_request_latency_seconds_count", labels), 2);
    assert.equal(value(families, "vllm:request_queue_time_seconds_count", labels), 2);
    assert.equal(
      value(families, "vllm:inter_token_latency_seconds_count", labels),
      59 + 3,
      "one inter-token gap per token after the first",
    );
    // The test preset's decode step is at least 5 ms of engine time: the histograms are in
    // engine seconds, whatever the --speed.
    assert.ok(value(families, "vllm:inter_token_latency_seconds_sum", labels) >= 62 * 0.005);
    // The V1 bucket layout.
    assert.deepEqual(
      family(families, "vllm:time_to_first_token_seconds")
        .samples.filter((s) => s.name.endsWith("_bucket"))
        .map((s) => s.labels.le),
      [
        "0.001",
        "0.005",
        "0.01",
        "0.02",
        "0.04",
        "0.06",
        "0.08",
        "0.1",
        "0.25",
        "0.5",
        "0.75",
        "1",
        "2.5",
        "5",
        "7.5",
        "10",
        "20",
        "40",
        "80",
        "160",
        "640",
        "2560",
        "+Inf",
      ],
    );

    const info = family(families, "vllm:cache_config_info").samples[0];
    assert.equal(info?.value, 1);
    assert.equal(info?.labels.block_size, "16");
    assert.equal(info?.labels.num_gpu_blocks, "32");
  });

  it("counts preemptions when the KV cache overflows", async () => {
    const server = await start({ clock: new ScaledClock(20) });
    const results = await Promise.all(
      Array.from({ length: 4 }, () =>
        json(server, "/v1/completions", {
          model: MODEL,
          prompt: Array.from({ length: 100 }, () => 9),
          max_tokens: 150,
          ignore_eos: true,
        }),
      ),
    );
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.equal(r.body.usage.completion_tokens, 150, "a preempted request still delivers every token");
    }
    const families = await scrape(server);
    const labels = { model_name: MODEL, engine: "0" };
    assert.ok(value(families, "vllm:num_preemptions_total", labels) > 0);
    assert.equal(value(families, "vllm:generation_tokens_total", labels), 600);
    assert.equal(value(families, "vllm:prompt_tokens_total", labels), 400);
  });

  it("v0 compat: V0 names, model_name label only", async () => {
    const server = await start({ metricsCompat: "v0" });
    const done = await json(server, "/v1/chat/completions", chat("hi", { max_tokens: 3, ignore_eos: true }));
    assert.equal(done.status, 200);
    const families = await scrape(server);
    const usage = value(families, "vllm:gpu_cache_usage_perc", { model_name: MODEL });
    assert.ok(usage >= 0 && usage <= 1);
    assert.equal(family(families, "vllm:gpu_cache_usage_perc").type, "gauge");
    assert.equal(families.has("vllm:kv_cache_usage_perc"), false);
    assert.equal(families.has("vllm:inter_token_latency_seconds"), false);
    assert.equal(family(families, "vllm:time_per_output_token_seconds").type, "histogram");
    assert.equal(value(families, "vllm:time_per_output_token_seconds_count", { model_name: MODEL }), 2);
    for (const name of [
      "vllm:num_requests_running",
      "vllm:num_requests_waiting",
      "vllm:num_requests_swapped",
      "vllm:prompt_tokens_total",
      "vllm:generation_tokens_total",
      "vllm:num_preemptions_total",
      "vllm:time_to_first_token_seconds",
      "vllm:e2e_request_latency_seconds",
      "vllm:request_queue_time_seconds",
      "vllm:cache_config_info",
    ]) {
      const f = family(families, name);
      assert.ok(f.samples.length > 0, name);
    }
    for (const f of families.values()) {
      for (const sample of f.samples) {
        assert.equal(sample.labels.engine, undefined, `${sample.name} has no engine label in v0`);
        if (f.name.startsWith("vllm:") && f.name !== "vllm:cache_config_info")
          assert.equal(sample.labels.model_name, MODEL);
      }
    }
    assert.equal(value(families, "vllm:generation_tokens_total", { model_name: MODEL }), 3);
  });
});

describe("ScaledClock", () => {
  it("runs engine time X times faster than the injected real clock", () => {
    let real = 1000;
    const clock = new ScaledClock(10, () => real);
    assert.equal(clock.now(), 1000);
    real += 50;
    assert.equal(clock.now(), 1500);
    assert.throws(() => new ScaledClock(0), /positive/);
    assert.throws(() => new ScaledClock(Number.NaN), /positive/);
  });

  it("fires a timer after ms / speed real milliseconds", async () => {
    const clock = new ScaledClock(20);
    const started = performance.now();
    await new Promise<void>((resolve) => clock.setTimeout(resolve, 400));
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 15 && elapsed < 300, `400 engine ms took ${elapsed.toFixed(1)} real ms`);
    let fired = false;
    const handle = clock.setTimeout(() => {
      fired = true;
    }, 20);
    clock.clearTimeout(handle);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(fired, false);
  });
});

describe("fairgate sim-engine CLI", () => {
  function run(args: string[]): ChildProcess & { output: () => string; exited: Promise<number | null> } {
    const child = spawn(process.execPath, [join(root, "bin", "fairgate.js"), "sim-engine", ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout?.on("data", (d) => (output += d));
    child.stderr?.on("data", (d) => (output += d));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    return Object.assign(child, { output: () => output, exited });
  }

  it("listens, prints its URL, serves /v1/models and exits 0 on SIGTERM", async () => {
    const child = run(["--listen", "127.0.0.1:0", "--preset", "test", "--speed", "4"]);
    try {
      const deadline = Date.now() + 20_000;
      let url: string | undefined;
      while (!url) {
        url = /listening on (http:\/\/\S+)/.exec(child.output())?.[1];
        if (child.exitCode !== null) assert.fail(`exited early: ${child.output()}`);
        if (Date.now() > deadline) assert.fail(`no URL printed: ${child.output()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: Array<{ id: string }> };
      assert.equal(models.data[0]?.id, "sim/test-model");
      const health = await fetch(`${url}/health`);
      assert.equal(health.status, 200);
      child.kill("SIGTERM");
      assert.equal(await child.exited, 0);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });

  it("--served-model-name renames the model", async () => {
    const child = run(["--listen", "127.0.0.1:0", "--preset", "test", "--served-model-name", "my-llm"]);
    try {
      const deadline = Date.now() + 20_000;
      let url: string | undefined;
      while (!url) {
        url = /listening on (http:\/\/\S+)/.exec(child.output())?.[1];
        if (child.exitCode !== null || Date.now() > deadline) assert.fail(child.output());
        await new Promise((r) => setTimeout(r, 50));
      }
      const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: Array<{ id: string }> };
      assert.equal(models.data[0]?.id, "my-llm");
      child.kill("SIGINT");
      assert.equal(await child.exited, 0);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });

  for (const [args, message] of [
    [["--bogus"], /Unknown option '--bogus'/],
    [["--preset", "gpt-5"], /unknown preset "gpt-5"/],
    [["--scheduling-policy", "lottery"], /--scheduling-policy must be fcfs or priority/],
    [["--metrics-compat", "v2"], /--metrics-compat must be v1 or v0/],
    [["--speed", "0"], /--speed must be a positive number/],
    [["--slowdown-probability", "0.5"], /must be given together/],
    [["--slowdown-probability", "2", "--slowdown-factor", "3"], /within 0\.\.1/],
    [["--listen", "nowhere"], /--listen: invalid listen address/],
    [["--load-delay-ms=-1"], /--load-delay-ms must be a non-negative integer/],
  ] as Array<[string[], RegExp]>) {
    it(`exits 2 on ${args.join(" ")}`, async () => {
      const child = run(args);
      assert.equal(await child.exited, 2);
      assert.match(child.output(), message);
    });
  }

  it("--list-presets prints each preset with its numbers and sources", async () => {
    const child = run(["--list-presets"]);
    assert.equal(await child.exited, 0);
    const out = child.output();
    for (const name of ["llama-3.1-8b-h100", "llama-3.1-70b-4xh100", "test"])
      assert.match(out, new RegExp(`^${name}$`, "m"));
    assert.match(out, /KV cache\s+27296 blocks x 16 tokens/);
    assert.match(out, /sources:\n\s+- model meta-llama\/Llama-3\.1-8B-Instruct/);
  });
});
