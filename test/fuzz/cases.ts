import fc from "fast-check";
import type { HeaderValue, ProcessingRequest } from "../../extproc/src/grpc/messages.ts";

/** The fuzz policy's body limit: small, so bodies around it are cheap to send. */
export const FUZZ_MAX_BODY_BYTES = 64 * 1024;
export const FUZZ_KEYS = ["key-acme", "key-globex", "key-initech"] as const;

/** One generated ext_proc stream: the messages in the order sent, and how the client ends it. */
export interface StreamCase {
  readonly messages: ProcessingRequest[];
  /** end: half-close after the last reply; cancel: reset at once after sending; drop-after:
   * reset after that many replies (a client that goes away mid-request). */
  readonly ending: { kind: "end" } | { kind: "cancel" } | { kind: "drop-after"; replies: number };
  /** How long the "engine" takes once the request is let through (before the response). */
  readonly engineMs: number;
}

const bytes = (text: string) => Buffer.from(text, "utf8");

/** Header bytes: printable, control characters, high latin1, invalid UTF-8, very long. */
const oddBytes = fc.oneof(
  fc.string({ maxLength: 40 }).map(bytes),
  fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
  fc.constantFrom(
    Buffer.from([0]),
    Buffer.from([0xff, 0xfe, 0xfd]),
    Buffer.from("\r\nx-injected: 1"),
    Buffer.alloc(16 * 1024, 0x61),
    Buffer.from("  Bearer   key-acme  "),
  ),
);

const headerValue = (key: fc.Arbitrary<string>, value: fc.Arbitrary<Buffer>): fc.Arbitrary<HeaderValue> =>
  fc.oneof(
    fc.record({ key, raw_value: value }),
    fc.record({ key, value: value.map((b) => b.toString("latin1")) }),
    // Both fields set: Envoy itself never sends this, a broken client might.
    fc.record({ key, value: fc.string({ maxLength: 8 }), raw_value: value }),
  );

const authorization = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...FUZZ_KEYS).map((k) => Buffer.from(`Bearer ${k}`)) },
  fc.constantFrom("Bearer", "Bearer ", "bearer key-acme", "Basic a2V5", "Bearer key-unknown", "").map(bytes),
  oddBytes,
);

const maxWait = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 5_000 }).map(String) },
  fc.constantFrom("-1", "1e3", "", " 100 ", "999999999999", "NaN", "0x10", "١٠٠"),
);

const headerEntries: fc.Arbitrary<HeaderValue[]> = fc
  .tuple(
    fc.option(headerValue(fc.constant("authorization"), authorization), { nil: undefined, freq: 5 }),
    fc.option(headerValue(fc.constant("x-fairgate-max-wait-ms"), maxWait.map(bytes)), {
      freq: 3,
      nil: undefined,
    }),
    fc.option(headerValue(fc.constant("x-tenant-id"), fc.constantFrom("acme", "evil", "").map(bytes)), {
      freq: 4,
      nil: undefined,
    }),
    fc.array(
      headerValue(
        fc.oneof(
          fc.constantFrom(
            "x-fairgate-tenant",
            "x-fairgate-priority",
            "content-length",
            "content-type",
            "x-fairgate-",
          ),
          fc.string({ minLength: 1, maxLength: 20 }),
        ),
        oddBytes,
      ),
      { maxLength: 6 },
    ),
  )
  .map(([auth, wait, tenant, rest]) =>
    [auth, wait, tenant, ...rest].filter((h): h is HeaderValue => h !== undefined),
  );

const path = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom("/v1/chat/completions", "/v1/completions", "/v1/embeddings") },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      "/tokenize",
      "/v1/responses",
      "/v1/rerank",
      "/pooling",
      "/v1/models",
      "/x?y=1",
    ),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 30 }) },
);
const method = fc.oneof(
  { weight: 8, arbitrary: fc.constant("POST") },
  { weight: 2, arbitrary: fc.constantFrom("GET", "PUT", "DELETE", "post", "") },
);

function requestHeaders(
  m: string | undefined,
  p: string | undefined,
  extra: HeaderValue[],
  eos: boolean,
): ProcessingRequest {
  const pseudo: HeaderValue[] = [];
  if (m !== undefined) pseudo.push({ key: ":method", raw_value: bytes(m) });
  if (p !== undefined) pseudo.push({ key: ":path", raw_value: bytes(p) });
  pseudo.push({ key: ":authority", raw_value: bytes("fuzz.local") });
  return { request_headers: { headers: { headers: [...pseudo, ...extra] }, end_of_stream: eos } };
}

/** A JSON value nested `depth` levels, as text (built as text: too deep for stringify). */
const deepText = (depth: number, kind: "array" | "object") =>
  kind === "array"
    ? `${"[".repeat(depth)}${"]".repeat(depth)}`
    : `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`;

const edgeNumber = fc.oneof(
  fc.constantFrom(
    0,
    -0,
    1,
    -1,
    1.5,
    2 ** 31,
    2 ** 53,
    2 ** 53 + 2,
    Number.MAX_VALUE,
    Number.MIN_VALUE,
    1e308,
  ),
  fc.double(),
  fc.integer(),
);
const oddString = fc.oneof(
  fc.string({ maxLength: 50 }),
  fc.string({ unit: "grapheme", maxLength: 30 }),
  fc.constantFrom("\u0000", "\ud800", "\u202e", "🙂".repeat(500), "a".repeat(20_000)),
);
const oddValue: fc.Arbitrary<unknown> = fc.oneof(
  edgeNumber,
  oddString,
  fc.constantFrom(null, true, false, [], {}),
  fc.jsonValue({ maxDepth: 4 }),
);

const message = fc.record({
  role: fc.oneof(fc.constantFrom("user", "system", "assistant", "tool"), oddValue),
  content: fc.oneof(
    oddString,
    fc.constant(null),
    fc.array(
      fc.oneof(
        fc.record({ type: fc.constant("text"), text: oddString }),
        fc.record({ type: fc.constantFrom("image_url", "input_audio", "file") }),
        oddValue,
      ),
      { maxLength: 4 },
    ),
    oddValue,
  ),
});

const chatObject = fc.record(
  {
    model: fc.oneof(fc.constant("m"), oddValue),
    messages: fc.oneof(fc.array(message, { maxLength: 5 }), oddValue),
    max_tokens: fc.oneof(fc.integer({ min: 1, max: 4096 }), edgeNumber, oddValue),
    max_completion_tokens: oddValue,
    n: fc.oneof(fc.integer({ min: 1, max: 200 }), oddValue),
    stream: fc.oneof(fc.boolean(), oddValue),
    stream_options: fc.oneof(fc.record({ include_usage: fc.boolean() }), oddValue),
    tools: oddValue,
    prompt: fc.oneof(oddString, fc.array(fc.integer({ min: -2, max: 1e6 }), { maxLength: 20 }), oddValue),
    input: fc.oneof(oddString, fc.array(oddString, { maxLength: 5 }), oddValue),
  },
  { requiredKeys: [] },
);

/** Bodies: plausible OpenAI requests with odd fields, deep nesting, huge arrays, bodies
 * around the size limit, and raw bytes that are not JSON or not UTF-8. */
/** A request fairgate should schedule: these reach the queue, the gate and dispatch. */
const validChat = fc
  .record({
    model: fc.constant("m"),
    messages: fc.array(fc.record({ role: fc.constant("user"), content: fc.string({ maxLength: 200 }) }), {
      minLength: 1,
      maxLength: 3,
    }),
    max_tokens: fc.integer({ min: 1, max: 512 }),
    stream: fc.boolean(),
    // So the same body is valid on /v1/completions and /v1/embeddings too.
    prompt: fc.string({ maxLength: 100 }),
    input: fc.string({ maxLength: 100 }),
  })
  .map((o) => Buffer.from(JSON.stringify(o)));

export const bodyArbitrary: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 12, arbitrary: validChat },
  { weight: 10, arbitrary: chatObject.map((o) => Buffer.from(JSON.stringify(o))) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.integer({ min: 100, max: 20_000 }), fc.constantFrom("array", "object" as const))
      .map(([depth, kind]) =>
        bytes(
          `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":${deepText(depth, kind as "array")}}`,
        ),
      ),
  },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 1_000, max: 5_000 }).map((n) =>
      bytes(
        JSON.stringify({
          model: "m",
          messages: Array.from({ length: n }, () => ({ role: "user", content: "" })),
        }),
      ),
    ),
  },
  {
    weight: 2,
    arbitrary: fc.integer({ min: -2, max: 2 }).map((delta) => {
      const head = '{"model":"m","messages":[{"role":"user","content":"';
      const tail = '"}]}';
      const fill = FUZZ_MAX_BODY_BYTES + delta - head.length - tail.length;
      return bytes(`${head}${"z".repeat(Math.max(0, fill))}${tail}`);
    }),
  },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(Buffer.alloc(0), bytes("null"), bytes("[]"), bytes('"x"'), bytes("{")),
  },
);

type Phase =
  | "request_body"
  | "request_trailers"
  | "response_headers"
  | "response_body"
  | "response_trailers"
  | "none";
const laterMessage = (chunk: fc.Arbitrary<Buffer>): fc.Arbitrary<ProcessingRequest> =>
  fc
    .tuple(
      fc.constantFrom<Phase>(
        "request_body",
        "request_body",
        "request_trailers",
        "response_headers",
        "response_body",
        "response_trailers",
        "none",
      ),
      chunk,
      fc.boolean(),
      fc.integer({ min: 100, max: 599 }),
    )
    .map(([phase, payload, eos, status]): ProcessingRequest => {
      switch (phase) {
        case "request_body":
          return { request_body: { body: payload, end_of_stream: eos } };
        case "response_body":
          return { response_body: { body: payload.subarray(0, 100), end_of_stream: eos } };
        case "request_trailers":
          return { request_trailers: { trailers: { headers: [] } } };
        case "response_trailers":
          return { response_trailers: { trailers: { headers: [] } } };
        case "response_headers":
          return {
            response_headers: {
              headers: { headers: [{ key: ":status", raw_value: bytes(String(status)) }] },
              end_of_stream: eos,
            },
          };
        default:
          return {};
      }
    });

/** A well-ordered exchange (most cases), so the deep paths are reached. */
const wellOrdered: fc.Arbitrary<ProcessingRequest[]> = fc
  .tuple(method, path, headerEntries, bodyArbitrary, fc.boolean(), fc.boolean())
  .map(([m, p, extra, b, streamed, withTrailers]) => {
    const messages: ProcessingRequest[] = [requestHeaders(m, p, extra, false)];
    if (streamed && b.length > 2) {
      const cut = Math.floor(b.length / 2);
      messages.push({ request_body: { body: b.subarray(0, cut), end_of_stream: false } });
      messages.push({ request_body: { body: b.subarray(cut), end_of_stream: !withTrailers } });
    } else messages.push({ request_body: { body: b, end_of_stream: !withTrailers } });
    if (withTrailers) messages.push({ request_trailers: { trailers: { headers: [] } } });
    messages.push({
      response_headers: { headers: { headers: [{ key: ":status", raw_value: bytes("200") }] } },
    });
    messages.push({ response_trailers: { trailers: { headers: [] } } });
    return messages;
  });

/** Any order at all, pseudo-headers sometimes missing. */
const anyOrder: fc.Arbitrary<ProcessingRequest[]> = fc
  .tuple(
    fc.option(method, { nil: undefined, freq: 6 }),
    fc.option(path, { nil: undefined, freq: 6 }),
    headerEntries,
    fc.boolean(),
    fc.array(laterMessage(bodyArbitrary), { maxLength: 5 }),
    fc.boolean(),
  )
  .map(([m, p, extra, eos, rest, headersFirst]) =>
    headersFirst ? [requestHeaders(m, p, extra, eos), ...rest] : [...rest, requestHeaders(m, p, extra, eos)],
  );

export const streamCase: fc.Arbitrary<StreamCase> = fc.record({
  engineMs: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 600 })),
  messages: fc.oneof({ weight: 3, arbitrary: wellOrdered }, { weight: 1, arbitrary: anyOrder }),
  ending: fc.oneof(
    { weight: 6, arbitrary: fc.constant({ kind: "end" as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: "cancel" as const }) },
    {
      weight: 2,
      arbitrary: fc.integer({ min: 0, max: 3 }).map((replies) => ({ kind: "drop-after" as const, replies })),
    },
  ),
});
