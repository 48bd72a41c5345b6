import assert from "node:assert/strict";
import {
  eventJson,
  parseEventQuery,
  parseRfc3339,
  QUERY_PATH,
  QueryParamError,
  responseJson,
} from "../../lib/flowapi/query.ts";
import { FlowReceiver } from "../../lib/flowapi/server.ts";
import {
  type EventQuery,
  type EventStore,
  MemoryEventStore,
  type QueryResult,
  StoreError,
} from "../../lib/flowapi/store.ts";
import { SECRET, stored } from "./_events.ts";

function parse(query: string): EventQuery {
  return parseEventQuery(new URLSearchParams(query));
}

function paramError(query: string): QueryParamError {
  try {
    parse(query);
  } catch (err) {
    assert.ok(err instanceof QueryParamError, `expected a QueryParamError, got ${err}`);
    return err;
  }
  assert.fail(`expected "${query}" to be rejected`);
}

// --- parameters ---------------------------------------------------------------------------

Deno.test("parseEventQuery() defaults to page 1 of 1000, no filters", () => {
  assert.deepEqual(parse(""), { page: 1, pageSize: 1000 });
  assert.deepEqual(parse("search="), { page: 1, pageSize: 1000 });
});

Deno.test("parseEventQuery() reads every filter", () => {
  const key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
  assert.deepEqual(
    parse(
      `page=3&page_size=50000&reporter_id=${encodeURIComponent(key)}&protocol=17&type=end` +
        "&direction=ingress&search=fd00%3A%3A1&start_date=2026-01-01T00:00:00Z" +
        "&end_date=2026-01-31T23:59:59.999Z",
    ),
    {
      page: 3,
      pageSize: 50000,
      reporterId: key,
      protocol: 17,
      type: "end",
      direction: "ingress",
      search: "fd00::1",
      startMs: Date.UTC(2026, 0, 1),
      endMs: Date.UTC(2026, 0, 31, 23, 59, 59, 999),
    },
  );
});

Deno.test("parseEventQuery() accepts NetBird's enum names and protocol names", () => {
  assert.equal(parse("type=TYPE_DROP").type, "drop");
  assert.equal(parse("type=Start").type, "start");
  assert.equal(parse("type=TYPE_UNKNOWN").type, "unknown");
  assert.equal(parse("direction=EGRESS").direction, "egress");
  assert.equal(parse("direction=DIRECTION_UNKNOWN").direction, "unknown");
  assert.equal(parse("protocol=icmpv6").protocol, 58);
  assert.equal(parse("protocol=TCP").protocol, 6);
  assert.equal(parse("protocol=0").protocol, 0);
  assert.equal(parse("protocol=255").protocol, 255);
});

Deno.test("parseEventQuery() restores a reporter_id whose + arrived as a space", () => {
  // "a+b/..." sent without URL encoding: URLSearchParams turns "+" into " ".
  const key = "ab+/AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
  assert.equal(parse(`reporter_id=${key}`).reporterId, key);
  assert.equal(parse(`reporter_id=${encodeURIComponent(key)}`).reporterId, key);
  // URL-safe alphabet, no padding.
  assert.equal(parse("reporter_id=ab-_AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE").reporterId, key);
});

Deno.test("parseEventQuery() rejects each bad parameter with a message naming it", () => {
  const cases: [string, string][] = [
    ["page=0", "page"],
    ["page=-1", "page"],
    ["page=1.5", "page"],
    ["page=abc", "page"],
    ["page=", "page"],
    ["page=1000000001", "page"],
    ["page_size=0", "page_size"],
    ["page_size=50001", "page_size"],
    ["page_size=1e3", "page_size"],
    ["reporter_id=not%20base64!", "reporter_id"],
    ["reporter_id=", "reporter_id"],
    ["reporter_id=A", "reporter_id"],
    ["protocol=256", "protocol"],
    ["protocol=-6", "protocol"],
    ["protocol=http", "protocol"],
    ["protocol=constructor", "protocol"],
    ["type=begin", "type"],
    ["type=toString", "type"],
    ["type=", "type"],
    ["direction=inbound", "direction"],
    ["direction=__proto__", "direction"],
    [`search=${"x".repeat(257)}`, "search"],
    ["start_date=yesterday", "start_date"],
    ["start_date=2026-01-01", "start_date"],
    ["start_date=2026-01-01T00:00:00", "start_date"], // no offset
    ["end_date=2026-13-01T00:00:00Z", "end_date"],
    ["end_date=2026-02-29T00:00:00Z", "end_date"], // not a leap year
    ["end_date=2026-01-01T24:00:00Z", "end_date"],
    ["end_date=2026-01-01T00:00:00+25:00", "end_date"],
    ["start_date=2026-01-02T00:00:00Z&end_date=2026-01-01T00:00:00Z", "end_date"],
    ["pagesize=10", "pagesize"],
    ["user_id=u1", "user_id"],
    ["connection_type=P2P", "connection_type"],
    ["source_id=x", "source_id"],
    ["page=1&page=2", "page"],
  ];
  for (const [query, parameter] of cases) {
    const err = paramError(query);
    assert.equal(err.parameter, parameter, query);
    assert.ok(err.message.includes(parameter), `${query}: "${err.message}" should name it`);
  }
});

Deno.test("parseRfc3339() handles offsets, fractions and leap days", () => {
  assert.equal(parseRfc3339("2026-01-01T00:00:00Z"), Date.UTC(2026, 0, 1));
  assert.equal(parseRfc3339("2026-01-01t00:00:00z"), Date.UTC(2026, 0, 1));
  assert.equal(parseRfc3339("2026-01-01 02:30:00+02:30"), Date.UTC(2026, 0, 1));
  assert.equal(parseRfc3339("2025-12-31T20:00:00-04:00"), Date.UTC(2026, 0, 1));
  assert.equal(parseRfc3339("2024-02-29T00:00:00Z"), Date.UTC(2024, 1, 29));
  assert.equal(parseRfc3339("2000-02-29T00:00:00Z"), Date.UTC(2000, 1, 29));
  assert.equal(parseRfc3339("1900-02-29T00:00:00Z"), undefined);
  assert.equal(parseRfc3339("0050-01-01T00:00:00Z"), -60589296000000);
  // Sub-millisecond fractions round toward the inside of a range.
  assert.equal(parseRfc3339("2026-01-01T00:00:00.0001Z"), Date.UTC(2026, 0, 1));
  assert.equal(parseRfc3339("2026-01-01T00:00:00.0001Z", true), Date.UTC(2026, 0, 1) + 1);
  assert.equal(parseRfc3339("2026-01-01T00:00:00.123456789Z"), Date.UTC(2026, 0, 1) + 123);
  assert.equal(parseRfc3339("2026-06-30T23:59:60Z"), Date.UTC(2026, 6, 1));
});

// --- JSON ---------------------------------------------------------------------------------

Deno.test("eventJson() writes every field in snake_case, counters as exact integers", () => {
  const e = stored(1, {
    rxBytes: "18446744073709551615",
    ruleId: "policy-1",
    destResourceId: 'res "quoted"',
    windowStart: "2026-03-01T11:59:00.000Z",
    windowEnd: "2026-03-01T12:00:00.000Z",
    numOfStarts: "3",
  });
  const text = eventJson(e);
  assert.ok(text.includes('"rx_bytes":18446744073709551615,'), text);
  const parsed = JSON.parse(text);
  assert.deepEqual(Object.keys(parsed), [
    "event_id",
    "timestamp",
    "reporter_id",
    "flow_id",
    "type",
    "direction",
    "protocol",
    "source_ip",
    "dest_ip",
    "source_port",
    "dest_port",
    "icmp_type",
    "icmp_code",
    "rx_packets",
    "tx_packets",
    "rx_bytes",
    "tx_bytes",
    "rule_id",
    "source_resource_id",
    "dest_resource_id",
    "num_of_starts",
    "num_of_ends",
    "num_of_drops",
    "window_start",
    "window_end",
  ]);
  assert.equal(parsed.dest_resource_id, 'res "quoted"');
  assert.equal(parsed.source_resource_id, null);
  assert.equal(parsed.rule_id, "policy-1");
  assert.equal(parsed.num_of_starts, 3);
  assert.equal(parsed.window_end, "2026-03-01T12:00:00.000Z");
});

Deno.test("eventJson() writes null for absent addresses, flow ID and window", () => {
  const parsed = JSON.parse(eventJson(stored(1, { sourceIp: "", destIp: "", flowId: "" })));
  assert.equal(parsed.source_ip, null);
  assert.equal(parsed.dest_ip, null);
  assert.equal(parsed.flow_id, null);
  assert.equal(parsed.window_start, null);
  assert.equal(parsed.window_end, null);
});

Deno.test("responseJson() writes NetBird's envelope", () => {
  const body = JSON.parse(
    responseJson({ events: [stored(1)], total: 5 }, { page: 2, pageSize: 2 }),
  );
  assert.deepEqual(Object.keys(body), [
    "data",
    "page",
    "page_size",
    "total_records",
    "total_pages",
  ]);
  assert.equal(body.data.length, 1);
  assert.deepEqual(
    [body.page, body.page_size, body.total_records, body.total_pages],
    [2, 2, 5, 3],
  );
  const empty = JSON.parse(responseJson({ events: [], total: 0 }, { page: 1, pageSize: 10 }));
  assert.deepEqual(empty, { data: [], page: 1, page_size: 10, total_records: 0, total_pages: 0 });
});

// --- HTTP ---------------------------------------------------------------------------------

const KEY_A = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const KEY_B = "+/7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v7+/v4="; // has "+" and "/"

function receiverWith(store: EventStore): FlowReceiver {
  return new FlowReceiver({
    store,
    tokenSecret: SECRET,
    listen: { hostname: "127.0.0.1", port: 0 },
  });
}

async function sampleStore(): Promise<MemoryEventStore> {
  const store = new MemoryEventStore();
  const t = (s: number): string => new Date(Date.UTC(2026, 2, 1, 12, 0, s)).toISOString();
  const events = [
    stored(1, { timestamp: t(1), type: "start", protocol: 6, reporterId: KEY_A }),
    stored(2, { timestamp: t(2), type: "end", protocol: 6, reporterId: KEY_A }),
    stored(3, {
      timestamp: t(3),
      type: "start",
      protocol: 1,
      icmpType: 8,
      sourcePort: 0,
      destPort: 0,
      reporterId: KEY_B,
      direction: "ingress",
    }),
    stored(4, {
      timestamp: t(4),
      type: "drop",
      protocol: 17,
      sourceIp: "fd00:64::1",
      destIp: "fd00:64::2",
      reporterId: KEY_B,
      direction: "ingress",
    }),
    stored(5, {
      timestamp: t(5),
      type: "unknown",
      protocol: 6,
      destIp: "192.0.2.10",
      destResourceId: "WebApp",
      direction: "unknown",
    }),
  ];
  for (const e of events) await store.put(e);
  return store;
}

// deno-lint-ignore no-explicit-any
async function get(receiver: FlowReceiver, query: string): Promise<[number, any]> {
  const res = await receiver.handleHttp(new Request(`http://localhost${QUERY_PATH}?${query}`));
  assert.equal(res.headers.get("content-type"), "application/json; charset=utf-8");
  return [res.status, await res.json()];
}

async function eventIds(receiver: FlowReceiver, query: string): Promise<number[]> {
  const [status, body] = await get(receiver, query);
  assert.equal(status, 200, JSON.stringify(body));
  return body.data.map((e: { event_id: string }) => parseInt(e.event_id.slice(-12), 16));
}

Deno.test("handleHttp() answers with every event, newest first", async () => {
  const receiver = receiverWith(await sampleStore());
  const [status, body] = await get(receiver, "");
  assert.equal(status, 200);
  assert.equal(body.total_records, 5);
  assert.equal(body.total_pages, 1);
  assert.equal(body.page, 1);
  assert.equal(body.page_size, 1000);
  assert.deepEqual(
    body.data.map((e: { event_id: string }) => e.event_id.slice(-1)),
    ["5", "4", "3", "2", "1"],
  );
  assert.equal(receiver.stats().queries, 1);
});

Deno.test("handleHttp() applies each filter", async () => {
  const receiver = receiverWith(await sampleStore());
  const cases: [string, number[]][] = [
    [`reporter_id=${encodeURIComponent(KEY_B)}`, [4, 3]],
    [`reporter_id=${KEY_B}`, [4, 3]], // "+" unencoded
    [`reporter_id=${KEY_A}`, [5, 2, 1]],
    ["reporter_id=AAAA", []],
    ["protocol=6", [5, 2, 1]],
    ["protocol=icmp", [3]],
    ["protocol=17", [4]],
    ["type=start", [3, 1]],
    ["type=TYPE_END", [2]],
    ["type=drop", [4]],
    ["type=unknown", [5]],
    ["direction=ingress", [4, 3]],
    ["direction=egress", [2, 1]],
    ["direction=unknown", [5]],
    ["search=FD00:64::2", [4]],
    ["search=192.0.2", [5]],
    ["search=webapp", [5]],
    ["search=%2B%2F7", [4, 3]], // reporter ID
    ["search=nothing", []],
    ["start_date=2026-03-01T12:00:02Z", [5, 4, 3, 2]],
    ["end_date=2026-03-01T12:00:02Z", [2, 1]],
    ["start_date=2026-03-01T12:00:02Z&end_date=2026-03-01T12:00:04Z", [4, 3, 2]],
    ["start_date=2026-03-01T13:00:02%2B01:00&end_date=2026-03-01T12:00:02Z", [2]],
    ["protocol=6&type=start", [1]],
    ["direction=ingress&search=fd00&type=drop", [4]],
  ];
  for (const [query, want] of cases) {
    assert.deepEqual(await eventIds(receiver, query), want, query);
  }
});

Deno.test("handleHttp() pages with NetBird's counts", async () => {
  const receiver = receiverWith(await sampleStore());
  const pages = [];
  for (let page = 1; page <= 3; page++) {
    const [status, body] = await get(receiver, `page=${page}&page_size=2`);
    assert.equal(status, 200);
    pages.push({ ids: body.data.map((e: { event_id: string }) => e.event_id.slice(-1)), ...body });
  }
  assert.deepEqual(pages.map((p) => p.ids), [["5", "4"], ["3", "2"], ["1"]]);
  for (const p of pages) {
    assert.equal(p.total_records, 5);
    assert.equal(p.total_pages, 3);
    assert.equal(p.page_size, 2);
  }
  const [, beyond] = await get(receiver, "page=9&page_size=2");
  assert.deepEqual([beyond.data.length, beyond.total_records, beyond.page], [0, 5, 9]);
  const [, filtered] = await get(receiver, "page=2&page_size=1&protocol=6");
  assert.deepEqual([filtered.data[0].event_id.slice(-1), filtered.total_records], ["2", 3]);
});

Deno.test("handleHttp() answers 400 with a message naming the parameter", async () => {
  const receiver = receiverWith(await sampleStore());
  for (
    const [query, parameter] of [
      ["page=0", "page"],
      ["page_size=50001", "page_size"],
      ["reporter_id=%21", "reporter_id"],
      ["protocol=300", "protocol"],
      ["type=open", "type"],
      ["direction=in", "direction"],
      ["start_date=2026-03-01", "start_date"],
      ["end_date=never", "end_date"],
      ["foo=1", "foo"],
    ] as const
  ) {
    const [status, body] = await get(receiver, query);
    assert.equal(status, 400, query);
    assert.deepEqual(Object.keys(body), ["message"]);
    assert.ok(body.message.includes(parameter), `${query}: ${body.message}`);
  }
  assert.equal(receiver.stats().queryErrors, 9);
});

Deno.test("handleHttp() only answers GET on the query path", async () => {
  const receiver = receiverWith(new MemoryEventStore());
  const post = await receiver.handleHttp(
    new Request(`http://localhost${QUERY_PATH}`, { method: "POST", body: "{}" }),
  );
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET");
  assert.ok((await post.json()).message.includes("POST"));
  const del = await receiver.handleHttp(
    new Request(`http://localhost${QUERY_PATH}`, { method: "DELETE" }),
  );
  assert.equal(del.status, 405);
  await del.body?.cancel();
  const other = await receiver.handleHttp(new Request("http://localhost/api/events/audit"));
  assert.equal(other.status, 404);
  assert.ok((await other.json()).message.includes("/api/events/audit"));
  const withBody = await receiver.handleHttp(
    new Request(`http://localhost${QUERY_PATH}`, { headers: { "content-length": "10" } }),
  );
  assert.equal(withBody.status, 400);
  await withBody.body?.cancel();
  const long = await receiver.handleHttp(
    new Request(`http://localhost${QUERY_PATH}?search=${"a".repeat(9000)}`),
  );
  assert.equal(long.status, 414);
  await long.body?.cancel();
});

Deno.test("handleHttp() answers 503 when the store cannot answer", async () => {
  const failing: EventStore = {
    put: () => Promise.resolve(true),
    query: (_q: EventQuery): Promise<QueryResult> =>
      Promise.reject(new StoreError("Cannot query events: The client is offline")),
    close: () => Promise.resolve(),
  };
  const receiver = receiverWith(failing);
  const [status, body] = await get(receiver, "");
  assert.equal(status, 503);
  assert.ok(body.message.includes("The client is offline"), body.message);
});
