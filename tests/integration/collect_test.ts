/**
 * `netbird-ct collect` against real peers: a Python gRPC sender built from FLOW_PROTO, the
 * receiver as a subprocess, the query API over HTTP, and a real redis-server that the tests
 * kill and restart. Needs no root: python3-grpcio, python3-grpc-tools, redis-server,
 * redis-tools and openssl.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import { formatIp, parseIp } from "../../lib/net.ts";
import { EVENTS_METHOD } from "../../lib/flowapi/client.ts";
import { decodeFlowEventAck, encodeFlowEvent } from "../../lib/flowapi/proto.ts";
import { mintToken } from "../../lib/flowapi/token.ts";
import {
  base64OfHex,
  Collect,
  hexId,
  hexOfText,
  PyClient,
  type PyEvent,
  RedisServer,
  ROOT,
  tcpEvent,
  textOfHex,
  uuidOf,
} from "./_collect.ts";
import { selfSignedCert } from "../flowapi/_h2.ts";

const SECRET_TEXT = "integration-test-secret-0123456789abcdef";
const SECRET = new TextEncoder().encode(SECRET_TEXT);
const UNAUTHENTICATED = 16;
const RESOURCE_EXHAUSTED = 8;
const UNAVAILABLE = 14;

/** A temporary directory with the secret file (mode 600); removed on dispose. */
async function workDir(): Promise<{ dir: string; secret: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "netbird-ct-collect-" });
  const secret = `${dir}/secret`;
  await Deno.writeTextFile(secret, SECRET_TEXT + "\n", { mode: 0o600 });
  return {
    dir,
    secret,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

function bearer(ttlMs = 3_600_000): string {
  return `Bearer ${mintToken(SECRET, { ttlMs })}`;
}

const TYPES = ["unknown", "start", "end", "drop"];
const DIRECTIONS = ["unknown", "ingress", "egress"];

function iso(t: [number, number]): string {
  return new Date(t[0] * 1000 + Math.floor(t[1] / 1e6)).toISOString();
}

function bytesOf(text: string): Uint8Array {
  if (text.startsWith("hex:")) {
    const hex = text.slice(4);
    return new Uint8Array(hex.length / 2).map((_, i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16));
  }
  return parseIp(text)!;
}

function expectedIp(text: string | undefined): string | null {
  if (text === undefined || text === "") return null;
  const b = bytesOf(text);
  return b.length === 4 || b.length === 16 ? formatIp(b) : null;
}

/** What the query API must return for an event the Python sender sent. */
function expected(ev: PyEvent): Record<string, unknown> {
  const f = ev.flow_fields ?? {};
  const text = (hex: string | undefined): string | null =>
    hex === undefined || hex === "" ? null : textOfHex(hex);
  return {
    event_id: uuidOf(ev.event_id),
    timestamp: ev.timestamp ? iso(ev.timestamp) : "1970-01-01T00:00:00.000Z",
    reporter_id: base64OfHex(ev.public_key ?? ""),
    flow_id: f.flow_id === undefined ? null : uuidOf(f.flow_id),
    type: TYPES[f.type ?? 0],
    direction: DIRECTIONS[f.direction ?? 0],
    protocol: f.protocol ?? 0,
    source_ip: expectedIp(f.source_ip),
    dest_ip: expectedIp(f.dest_ip),
    source_port: f.port_info?.[0] ?? 0,
    dest_port: f.port_info?.[1] ?? 0,
    icmp_type: f.icmp_info?.[0] ?? 0,
    icmp_code: f.icmp_info?.[1] ?? 0,
    rx_packets: f.rx_packets ?? "0",
    tx_packets: f.tx_packets ?? "0",
    rx_bytes: f.rx_bytes ?? "0",
    tx_bytes: f.tx_bytes ?? "0",
    rule_id: text(f.rule_id),
    source_resource_id: text(f.source_resource_id),
    dest_resource_id: text(f.dest_resource_id),
    num_of_starts: f.num_of_starts ?? "0",
    num_of_ends: f.num_of_ends ?? "0",
    num_of_drops: f.num_of_drops ?? "0",
    window_start: ev.window_start ? iso(ev.window_start) : null,
    window_end: ev.window_end ? iso(ev.window_end) : null,
  };
}

/** Events covering every field: IPv4/IPv6, ports vs ICMP, windows, max counters, empties. */
const VARIED: PyEvent[] = [
  {
    event_id: hexId(1),
    timestamp: [1_790_000_001, 123_456_789],
    public_key: "11".repeat(32),
    flow_fields: {
      flow_id: hexId(1, "f1"),
      type: 1,
      rule_id: hexOfText("policy-allow-web"),
      direction: 2,
      protocol: 6,
      source_ip: "100.64.0.1",
      dest_ip: "100.64.0.2",
      port_info: [40001, 443],
      rx_packets: "1",
      tx_packets: "2",
      rx_bytes: "60",
      tx_bytes: "120",
      dest_resource_id: hexOfText("res-web"),
    },
  },
  {
    event_id: hexId(2),
    timestamp: [1_790_000_002, 0],
    public_key: "fb".repeat(32), // base64 with "+" and "/"
    flow_fields: {
      flow_id: hexId(2, "f2"),
      type: 2,
      direction: 1,
      protocol: 17,
      source_ip: "fd00:64::1", // 16 bytes on the wire
      dest_ip: "hex:fd000064000000000000000000000002",
      port_info: [5353, 5353],
      rx_packets: "18446744073709551615",
      tx_packets: "9007199254740993", // 2^53 + 1
      rx_bytes: "18446744073709551615",
      tx_bytes: "1",
      source_resource_id: hexOfText("src-ü"),
    },
  },
  {
    event_id: hexId(3),
    timestamp: [1_790_000_003, 999_999_999],
    public_key: "22".repeat(32),
    flow_fields: {
      flow_id: hexId(3, "f3"),
      type: 3,
      direction: 1,
      protocol: 1,
      source_ip: "192.0.2.7",
      dest_ip: "100.64.0.2",
      icmp_info: [8, 0],
      rule_id: hexOfText("deny-icmp"),
    },
  },
  {
    // An aggregate as NetBird's manager sends it: type UNKNOWN, window, counts.
    event_id: hexId(4),
    timestamp: [1_790_000_004, 500_000_000],
    public_key: "22".repeat(32),
    window_start: [1_790_000_000, 0],
    window_end: [1_790_000_004, 250_000_000],
    flow_fields: {
      flow_id: hexId(4, "f4"),
      type: 0,
      direction: 2,
      protocol: 58,
      source_ip: "fd00:64::1",
      dest_ip: "2001:db8::ff",
      icmp_info: [128, 0],
      rx_packets: "3",
      tx_packets: "3",
      rx_bytes: "312",
      tx_bytes: "312",
      num_of_starts: "3",
      num_of_ends: "2",
      num_of_drops: "1",
    },
  },
  {
    // IPv4-mapped IPv6 stays 16 bytes; an address of a bad length is no address.
    event_id: hexId(5),
    timestamp: [1_790_000_005, 0],
    public_key: "33".repeat(32),
    flow_fields: {
      flow_id: hexId(5, "f5"),
      type: 1,
      direction: 0,
      protocol: 132,
      source_ip: "hex:00000000000000000000ffff64400009",
      dest_ip: "hex:0102030405",
      port_info: [0, 9899],
    },
  },
  {
    // Nothing but an ID: no timestamp, no flow fields.
    event_id: hexId(6),
  },
];

Deno.test("collect: initiator ack first, one ack per event, the query API returns what was sent", async () => {
  await using work = await workDir();
  await using collect = await Collect.start(["--token-secret-file", work.secret]);
  await using client = await PyClient.start(collect.target, { authorization: bearer() });
  await client.send(...VARIED);
  const ids = VARIED.map((e) => e.event_id);
  await client.waitForAcks(ids);
  const acks = client.messages().filter((m) => m.type === "ack");
  assert.deepEqual(acks[0], { type: "ack", event_id: "", is_initiator: true });
  assert.deepEqual(
    acks.slice(1).map((a) => a.type === "ack" && a.event_id).sort(),
    [...ids].sort(),
    "exactly one ack per event",
  );
  await client.close();
  assert.deepEqual(await client.status(), { code: 0, details: "" });

  const { status, body } = await collect.query();
  assert.equal(status, 200);
  assert.equal(body.total_records, VARIED.length);
  // Newest first: event 6 has no timestamp (1970), so it comes last.
  assert.deepEqual(
    body.data.map((e) => e.event_id),
    [5, 4, 3, 2, 1, 6].map((n) => uuidOf(hexId(n))),
  );
  for (const sent of VARIED) {
    const got = body.data.find((e) => e.event_id === uuidOf(sent.event_id));
    assert.deepEqual(got, expected(sent), `event ${sent.event_id}`);
  }
  // Addresses are byte-exact: 16 bytes for IPv6 (including IPv4-mapped), 4 for IPv4.
  const byId = (n: number): Record<string, unknown> =>
    body.data.find((e) => e.event_id === uuidOf(hexId(n)))!;
  assert.deepEqual(
    parseIp(byId(2).source_ip as string),
    bytesOf("hex:fd000064000000000000000000000001"),
  );
  assert.equal(parseIp(byId(5).source_ip as string)?.length, 16);
  assert.equal(byId(5).source_ip, "::ffff:100.64.0.9");
  assert.equal(parseIp(byId(1).source_ip as string)?.length, 4);
  // ICMP events carry type/code and no ports; port events the reverse.
  assert.deepEqual(
    [byId(3).icmp_type, byId(3).icmp_code, byId(3).source_port, byId(3).dest_port],
    [8, 0, 0, 0],
  );
  assert.deepEqual(
    [byId(1).icmp_type, byId(1).source_port, byId(1).dest_port],
    [0, 40001, 443],
  );

  const { code, log } = await collect.stop("SIGINT");
  assert.equal(code, 0);
  assert.match(log, /Stopped\. Summary: received=6 stored=6 duplicates=0 acks=6 rejected=0 /);
});

Deno.test("collect: a resent event is stored once and acked each time; bad messages are not acked", async () => {
  await using work = await workDir();
  await using collect = await Collect.start(["--token-secret-file", work.secret]);
  await using first = await PyClient.start(collect.target, { authorization: bearer() });
  await first.send(tcpEvent(1), tcpEvent(2));
  await first.waitForAcks([hexId(1), hexId(2)]);
  // A changed copy with the same ID: the first version stays.
  await first.send(tcpEvent(1, { timestamp: [1_800_000_000, 0] }));
  await first.raw("0a0501"); // not a FlowEvent
  await first.send({ event_id: "abcd" }); // ID of 2 bytes
  await first.send(tcpEvent(3));
  await first.waitForAcks([hexId(3)]);
  await first.close();
  assert.equal((await first.status()).code, 0);
  assert.deepEqual(first.acks(), [hexId(1), hexId(2), hexId(1), hexId(3)]);

  // The sender reconnects and resends what it thinks was not acked.
  await using second = await PyClient.start(collect.target, { authorization: bearer() });
  await second.send(tcpEvent(2));
  await second.waitForAcks([hexId(2)]);
  await second.close();

  const { body } = await collect.query();
  assert.equal(body.total_records, 3);
  assert.equal(
    body.data.find((e) => e.event_id === uuidOf(hexId(1)))?.timestamp,
    iso([1_790_000_001, 0]),
  );
  const { code, log } = await collect.stop();
  assert.equal(code, 0);
  assert.match(log, /Summary: received=6 stored=3 duplicates=2 acks=5 rejected=2 /);
  assert.match(log, /Dropped a message from 127\.0\.0\.1:[0-9]+ \(not acked\)/);
});

Deno.test("collect: missing, malformed, expired and forged tokens get UNAUTHENTICATED; netbird-ct token works", async () => {
  await using work = await workDir();
  await using collect = await Collect.start(["--token-secret-file", work.secret]);
  const other = new TextEncoder().encode("some other secret, long enough....");
  const refused: [string, string | undefined][] = [
    ["missing", undefined],
    ["not Bearer", `Basic ${btoa("user:pass")}`],
    ["malformed", "Bearer not-a-token"],
    ["expired", `Bearer ${mintToken(SECRET, { ttlMs: 3_600_000, now: Date.now() - 7_200_000 })}`],
    ["forged", `Bearer ${mintToken(other, { ttlMs: 3_600_000 })}`],
  ];
  for (const [name, authorization] of refused) {
    await using client = await PyClient.start(
      collect.target,
      authorization === undefined ? {} : { authorization },
    );
    await client.send(tcpEvent(1));
    const status = await client.status();
    assert.equal(status.code, UNAUTHENTICATED, `${name}: ${JSON.stringify(status)}`);
    assert.deepEqual(client.acks(), [], `${name}: nothing acked`);
    assert.ok(!client.messages().some((m) => m.type === "ack"), `${name}: no initiator ack`);
  }
  assert.equal(
    (await collect.query()).body.total_records,
    0,
    "nothing stored from refused streams",
  );

  const minted = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}main.ts`,
      "token",
      "--ttl",
      "1h",
      "--token-secret-file",
      work.secret,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(minted.code, 0);
  const stdout = new TextDecoder().decode(minted.stdout);
  assert.match(stdout, /^[A-Za-z0-9+/]{43}=\.[0-9]{10}\n$/, "one line: <signature>.<payload>");
  const expiry = Number(stdout.trim().split(".")[1]);
  assert.ok(Math.abs(expiry - (Date.now() / 1000 + 3600)) < 60, "expires in an hour");
  await using valid = await PyClient.start(collect.target, {
    authorization: `Bearer ${stdout.trim()}`,
  });
  await valid.send(tcpEvent(1));
  await valid.waitForAcks([hexId(1)]);
  await valid.close();

  const { code, log } = await collect.stop();
  assert.equal(code, 0);
  assert.match(log, /auth_failures=5 /);
  assert.match(log, /Refused a stream from 127\.0\.0\.1:[0-9]+: Missing authorization/);
});

Deno.test("collect: limits: oversized messages, HTTP methods, paths and bad parameters", async () => {
  await using work = await workDir();
  await using collect = await Collect.start(["--token-secret-file", work.secret]);
  await using big = await PyClient.start(collect.target, { authorization: bearer() });
  await big.send(tcpEvent(1, {
    flow_fields: { ...tcpEvent(1).flow_fields, rule_id: "ab".repeat(100_000) },
  }));
  assert.equal((await big.status()).code, RESOURCE_EXHAUSTED);

  const post = await fetch(`${collect.httpBase}/api/events/network-traffic`, {
    method: "POST",
    body: "x".repeat(1000),
  });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET");
  await post.body?.cancel();
  const other = await fetch(`${collect.httpBase}/`);
  assert.equal(other.status, 404);
  await other.body?.cancel();
  for (
    const [query, parameter] of [
      ["page=0", "page"],
      ["page_size=100000", "page_size"],
      ["protocol=tcpp", "protocol"],
      ["type=begin", "type"],
      ["direction=sideways", "direction"],
      ["start_date=2026-01-01", "start_date"],
      ["start_date=2026-01-02T00:00:00Z&end_date=2026-01-01T00:00:00Z", "end_date"],
      ["reporter_id=%25%25", "reporter_id"],
      ["user_id=u", "user_id"],
    ] as const
  ) {
    const { status, body } = await collect.query(query);
    assert.equal(status, 400, query);
    assert.ok(body.message?.includes(parameter), `${query}: ${body.message}`);
  }
  assert.equal((await collect.stop()).code, 0);
});

Deno.test("collect: the query API filters and pages over HTTP", async () => {
  await using work = await workDir();
  await using collect = await Collect.start(["--token-secret-file", work.secret]);
  await using client = await PyClient.start(collect.target, { authorization: bearer() });
  // 12 events: reporters alternate, protocols TCP/UDP/ICMP in turn, types start/end/drop.
  const events: PyEvent[] = [];
  for (let n = 1; n <= 12; n++) {
    const protocol = [6, 17, 1][n % 3]!;
    events.push(tcpEvent(n, {
      public_key: (n % 2 === 0 ? "aa" : "fb").repeat(32),
      flow_fields: {
        ...tcpEvent(n).flow_fields,
        type: [1, 2, 3][n % 3]!,
        direction: n <= 6 ? 1 : 2,
        protocol,
        source_ip: n === 7 ? "fd00:64::7" : `100.64.0.${n}`,
        dest_resource_id: n === 9 ? hexOfText("Database") : "",
        ...(protocol === 1 ? { port_info: null, icmp_info: [8, 0] } : {}),
      },
    }));
  }
  await client.send(...events);
  await client.waitForAcks(events.map((e) => e.event_id));
  const ids = async (query: string): Promise<number[]> => {
    const { status, body } = await collect.query(query);
    assert.equal(status, 200, `${query}: ${body.message}`);
    return body.data.map((e) => parseInt((e.event_id as string).slice(-12), 16));
  };
  const all = [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1];
  assert.deepEqual(await ids(""), all);
  const keyA = base64OfHex("aa".repeat(32));
  const keyB = base64OfHex("fb".repeat(32));
  assert.deepEqual(await ids(`reporter_id=${encodeURIComponent(keyA)}`), [12, 10, 8, 6, 4, 2]);
  assert.deepEqual(await ids(`reporter_id=${keyB}`), [11, 9, 7, 5, 3, 1], "+ sent unencoded");
  assert.deepEqual(await ids("protocol=1"), [11, 8, 5, 2]);
  assert.deepEqual(await ids("protocol=udp"), [10, 7, 4, 1]);
  assert.deepEqual(await ids("type=start"), [12, 9, 6, 3]);
  assert.deepEqual(await ids("type=TYPE_END"), [10, 7, 4, 1]);
  assert.deepEqual(await ids("type=drop"), [11, 8, 5, 2]);
  assert.deepEqual(await ids("type=unknown"), []);
  assert.deepEqual(await ids("direction=ingress"), [6, 5, 4, 3, 2, 1]);
  assert.deepEqual(await ids("direction=EGRESS"), [12, 11, 10, 9, 8, 7]);
  assert.deepEqual(await ids("search=FD00%3A64"), [7]);
  assert.deepEqual(await ids("search=100.64.0.1"), [12, 11, 10, 1]);
  assert.deepEqual(await ids("search=database"), [9]);
  const t = (n: number): string => encodeURIComponent(iso([1_790_000_000 + n, 0]));
  assert.deepEqual(await ids(`start_date=${t(10)}`), [12, 11, 10]);
  assert.deepEqual(await ids(`end_date=${t(2)}`), [2, 1]);
  assert.deepEqual(await ids(`start_date=${t(4)}&end_date=${t(6)}&protocol=6`), [6]);
  assert.deepEqual(await ids("direction=egress&type=drop&protocol=icmp"), [11, 8]);
  const pages = [];
  for (let page = 1; page <= 3; page++) {
    const { body } = await collect.query(`page=${page}&page_size=5`);
    pages.push([body.page, body.page_size, body.total_records, body.total_pages, body.data.length]);
  }
  assert.deepEqual(pages, [[1, 5, 12, 3, 5], [2, 5, 12, 3, 5], [3, 5, 12, 3, 2]]);
  assert.deepEqual(await ids("page=2&page_size=2&direction=ingress"), [4, 3]);
  assert.deepEqual(await ids("page=4&page_size=5"), []);
  await client.close();
  assert.equal((await collect.stop()).code, 0);
});

Deno.test("collect: TLS with --tls-cert/--tls-key", async () => {
  await using work = await workDir();
  const cert = `${work.dir}/cert.pem`;
  const key = `${work.dir}/key.pem`;
  await selfSignedCert(cert, key, { san: "DNS:localhost,IP:127.0.0.1", endEntity: false });
  await using collect = await Collect.start([
    "--token-secret-file",
    work.secret,
    "--tls-cert",
    cert,
    "--tls-key",
    key,
  ]);
  assert.match(collect.log.lines.join("\n"), /\(gRPC, TLS\)/);
  await using tls = await PyClient.start(collect.target, { authorization: bearer(), caFile: cert });
  await tls.send(tcpEvent(1));
  await tls.waitForAcks([hexId(1)]);
  await tls.close();
  assert.equal((await tls.status()).code, 0);
  await using plain = await PyClient.start(collect.target, { authorization: bearer() });
  await plain.send(tcpEvent(2));
  assert.equal((await plain.status()).code, UNAVAILABLE, "h2c to a TLS port fails");
  assert.equal((await collect.query()).body.total_records, 1);
  assert.equal((await collect.stop()).code, 0);
});

Deno.test("collect: Redis keeps events across a receiver restart; resends are stored once", async () => {
  await using work = await workDir();
  await using redis = new RedisServer();
  await redis.start();
  const store = ["--store", redis.url(2)];
  const sent = [tcpEvent(1), VARIED[1]!, VARIED[2]!, VARIED[3]!];
  {
    await using collect = await Collect.start(["--token-secret-file", work.secret, ...store]);
    await using client = await PyClient.start(collect.target, { authorization: bearer() });
    await client.send(...sent);
    await client.waitForAcks(sent.map((e) => e.event_id));
    const { code, log } = await collect.stop();
    assert.equal(code, 0);
    assert.match(log, /store redis:\/\/127\.0\.0\.1:[0-9]+\/2/);
    assert.match(log, /Summary: received=4 stored=4 duplicates=0 acks=4 /);
  }
  // The layout: one JSON string per event, a sorted set by event time, in database 2.
  const id = uuidOf(hexId(1));
  assert.equal(
    (await redis.cli("-n", "2", "TYPE", `netbird-ct:flow:event:${id}`)).trim(),
    "string",
  );
  assert.equal(
    (await redis.cli("-n", "2", "ZSCORE", "netbird-ct:flow:by_time", id)).trim(),
    String(1_790_000_001_000),
  );
  assert.equal((await redis.cli("-n", "0", "DBSIZE")).trim(), "0", "nothing in database 0");
  {
    await using collect = await Collect.start(["--token-secret-file", work.secret, ...store]);
    const { body } = await collect.query();
    assert.equal(body.total_records, 4, "survived the restart");
    for (const ev of sent) {
      assert.deepEqual(
        body.data.find((e) => e.event_id === uuidOf(ev.event_id)),
        expected(ev),
        ev.event_id,
      );
    }
    assert.deepEqual(
      (await collect.query("protocol=17&type=end")).body.data.map((e) => e.event_id),
      [uuidOf(VARIED[1]!.event_id)],
    );
    await using client = await PyClient.start(collect.target, { authorization: bearer() });
    await client.send(tcpEvent(1), tcpEvent(1)); // resent twice after the restart
    await client.waitForAcks([hexId(1)]);
    await client.out.waitFor(
      () => client.acks().length === 2 ? true : undefined,
      5000,
      "two acks",
    );
    assert.equal((await collect.query()).body.total_records, 4);
    assert.equal((await redis.cli("-n", "2", "ZCARD", "netbird-ct:flow:by_time")).trim(), "4");
    const { code, log } = await collect.stop();
    assert.equal(code, 0);
    assert.match(log, /Summary: received=2 stored=0 duplicates=2 acks=2 /);
  }
});

Deno.test("collect: a Redis outage: errors logged, nothing acked, queries 503, recovery", async () => {
  await using work = await workDir();
  await using redis = new RedisServer();
  await redis.start();
  await using collect = await Collect.start([
    "--token-secret-file",
    work.secret,
    "--store",
    redis.url(1),
  ]);
  await using client = await PyClient.start(collect.target, { authorization: bearer() });
  await client.send(tcpEvent(1));
  await client.waitForAcks([hexId(1)]);

  await redis.kill();
  await collect.log.waitForMatch(/Redis connection lost/);
  await client.send(tcpEvent(2));
  await collect.log.waitForMatch(
    /Cannot store event 0a0b0c0d-0000-4000-8000-000000000002 \(not acked/,
  );
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(client.acks(), [hexId(1)], "nothing acked during the outage");
  const during = await collect.query();
  assert.equal(during.status, 503);
  assert.match(during.body.message ?? "", /cannot query the event store/);
  assert.equal(collect.exited, false, "the receiver keeps running");

  await redis.start(); // empty: this Redis has no persistence
  await collect.log.waitForMatch(/Redis connection restored after/, 15_000);
  // The sender resends what was not acked, like NetBird's retry loop (every second).
  const deadline = Date.now() + 15_000;
  while (!client.acks().includes(hexId(2))) {
    assert.ok(Date.now() < deadline, "event 2 acked after the recovery");
    await client.send(tcpEvent(2));
    await new Promise((r) => setTimeout(r, 500));
  }
  const after = await collect.query();
  assert.equal(after.status, 200);
  assert.deepEqual(after.body.data.map((e) => e.event_id), [uuidOf(hexId(2))]);
  assert.equal(
    (await redis.cli("-n", "1", "EXISTS", `netbird-ct:flow:event:${uuidOf(hexId(2))}`)).trim(),
    "1",
  );
  await client.close();
  const { code, log } = await collect.stop();
  assert.equal(code, 0);
  assert.match(log, /store_errors=[1-9]/);
});

Deno.test("collect: SIGTERM under load loses no acked event", async () => {
  await using work = await workDir();
  await using redis = new RedisServer();
  await redis.start();
  const collect = await Collect.start([
    "--token-secret-file",
    work.secret,
    "--store",
    redis.url(3),
  ]);
  await using _ = collect;
  await using client = await PyClient.start(collect.target, { authorization: bearer() });
  const events = Array.from({ length: 2000 }, (_, i) => tcpEvent(i + 1));
  // The sender may be gone (stream ended) before it read every line: ignore a broken pipe.
  const sending = client.send(...events).catch(() => {});
  await client.out.waitFor(
    () => client.acks().length >= 100 ? true : undefined,
    20_000,
    "100 acks",
  );
  const { code, log } = await collect.stop();
  assert.equal(code, 0, log);
  await sending;
  const status = await client.status();
  const acked = new Set(client.acks());
  assert.ok(acked.size >= 100);
  assert.ok(
    status.code === UNAVAILABLE || acked.size === events.length,
    `stream ended with ${JSON.stringify(status)}`,
  );
  const stored = new Set(
    (await redis.cli("-n", "3", "ZRANGE", "netbird-ct:flow:by_time", "0", "-1"))
      .trim().split("\n").filter((l) => l !== ""),
  );
  const lost = [...acked].filter((hex) => !stored.has(uuidOf(hex)));
  assert.deepEqual(lost, [], "every acked event is in Redis");
  const summary = /Summary: received=([0-9]+) stored=([0-9]+) duplicates=0 acks=([0-9]+) /.exec(
    log,
  );
  assert.ok(summary, log);
  assert.equal(Number(summary[3]), acked.size, "the receiver's ack count matches the sender's");
  assert.equal(Number(summary[2]), stored.size);
});

/**
 * One grpc-js sender (as the tracker's client, on Deno's node:http2): a channel, one Events
 * stream, `count` events acked; then the stream is half-closed (status OK awaited) or cancelled,
 * and the channel is closed, which sends a GOAWAY to the receiver.
 */
async function grpcJsSender(
  target: string,
  first: number,
  count: number,
  ending: "end" | "cancel",
): Promise<number> {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  const identity = (b: Buffer): Buffer => b;
  const metadata = new grpc.Metadata();
  metadata.set("authorization", bearer());
  const call = client.makeBidiStreamRequest(EVENTS_METHOD, identity, identity, metadata);
  const acked = new Set<string>();
  const allAcked = Promise.withResolvers<void>();
  const status = Promise.withResolvers<grpc.StatusObject>();
  call.on("data", (b: Buffer) => {
    const ack = decodeFlowEventAck(new Uint8Array(b));
    if (ack.isInitiator) return;
    acked.add([...ack.eventId].map((x) => x.toString(16).padStart(2, "0")).join(""));
    if (acked.size === count) allAcked.resolve();
  });
  call.on("error", () => {});
  call.on("status", (s: grpc.StatusObject) => {
    status.resolve(s);
    allAcked.resolve();
  });
  const bytes = (hexText: string): Uint8Array =>
    new Uint8Array(hexText.match(/../g)!.map((h) => parseInt(h, 16)));
  call.write(Buffer.from(encodeFlowEvent({
    eventId: new Uint8Array(0),
    publicKey: new Uint8Array(0),
    isInitiator: true,
  })));
  for (let n = first; n < first + count; n++) {
    const e = tcpEvent(n);
    call.write(Buffer.from(encodeFlowEvent({
      eventId: bytes(e.event_id),
      timestamp: new Date(e.timestamp![0] * 1000),
      publicKey: bytes(e.public_key!),
      isInitiator: false,
    })));
  }
  await allAcked.promise;
  if (ending === "end") {
    call.end();
    const s = await status.promise;
    assert.equal(s.code, grpc.status.OK, s.details);
  } else {
    call.cancel();
    await status.promise;
  }
  client.close(); // GOAWAY from the client: this used to abort the receiver (deno#36788)
  return acked.size;
}

Deno.test({
  name: "collect: grpc-js senders that close their channels (GOAWAY) do not take the receiver down",
  // grpc-js leaves unref'd reconnect/idle timers behind after close().
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(): Promise<void> {
    await using work = await workDir();
    await using collect = await Collect.start(["--token-secret-file", work.secret]);
    let next = 1;
    let total = 0;
    for (let round = 0; round < 5; round++) {
      const senders = [0, 1, 2, 3].map((i) => {
        const first = next;
        next += 200;
        return grpcJsSender(collect.target, first, 200, i % 2 === 0 ? "end" : "cancel");
      });
      const acked = await Promise.all(senders);
      assert.deepEqual(acked, [200, 200, 200, 200], `round ${round + 1}: every event acked`);
      total += 800;
      await new Promise((resolve) => setTimeout(resolve, 300)); // the GOAWAYs arrive
      assert.equal(collect.exited, false, `round ${round + 1}: the receiver is up`);
      assert.equal((await collect.query()).body.total_records, total);
    }
    // Still serving, also other senders.
    await using py = await PyClient.start(collect.target, { authorization: bearer() });
    await py.send(tcpEvent(next));
    await py.waitForAcks([hexId(next)]);
    await py.close();
    const { code, log } = await collect.stop();
    assert.equal(code, 0, log);
    assert.match(log, /Summary: received=4001 stored=4001 duplicates=0 acks=4001 /);
  },
});

Deno.test({
  name: "collect: a graceful stop does not take grpc-js senders down (idle and busy connections)",
  // grpc-js leaves unref'd reconnect/idle timers behind after close().
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(): Promise<void> {
    await using work = await workDir();
    for (let round = 0; round < 3; round++) {
      const collect = await Collect.start(["--token-secret-file", work.secret]);
      await using _ = collect;
      // An idle connection whose streams are all finished: closed without a GOAWAY (a GOAWAY
      // there can abort grpc-js on Deno, deno#36788; see BENCHMARKS.md). And one with an open
      // stream: GOAWAY, then UNAVAILABLE.
      const idle = new grpc.Client(collect.target, grpc.credentials.createInsecure());
      const busy = new grpc.Client(collect.target, grpc.credentials.createInsecure());
      const identity = (b: Buffer): Buffer => b;
      const open = (client: grpc.Client, first: number, end: boolean): Promise<number> => {
        const metadata = new grpc.Metadata();
        metadata.set("authorization", bearer());
        const call = client.makeBidiStreamRequest(EVENTS_METHOD, identity, identity, metadata);
        let acks = 0;
        return new Promise((resolve) => {
          call.on("data", (b: Buffer) => {
            if (decodeFlowEventAck(new Uint8Array(b)).isInitiator) return;
            if (++acks === 10 && end) call.end();
            if (acks === 10 && !end) resolve(-1);
          });
          call.on("error", () => {});
          call.on("status", (st: grpc.StatusObject) => resolve(st.code));
          for (let n = first; n < first + 10; n++) {
            call.write(Buffer.from(encodeFlowEvent({
              eventId: Uint8Array.from(
                { length: 16 },
                (_, i) => i === 15 ? n : i === 14 ? round : 0,
              ),
              publicKey: new Uint8Array(32),
              isInitiator: false,
            })));
          }
        });
      };
      assert.deepEqual(await Promise.all([open(idle, 0, true), open(idle, 10, true)]), [0, 0]);
      const busyStatus = Promise.withResolvers<number>();
      await open(busy, 20, false).then(() => {
        const metadata = new grpc.Metadata();
        metadata.set("authorization", bearer());
        const call = busy.makeBidiStreamRequest(EVENTS_METHOD, identity, identity, metadata);
        call.on("error", () => {});
        call.on("status", (st: grpc.StatusObject) => busyStatus.resolve(st.code));
      });
      await new Promise((resolve) => setTimeout(resolve, 300)); // idle for a while
      const { code } = await collect.stop();
      assert.equal(code, 0);
      assert.equal(await busyStatus.promise, UNAVAILABLE, "the open stream ends with UNAVAILABLE");
      await new Promise((resolve) => setTimeout(resolve, 300)); // the clients see the close
      idle.close();
      busy.close();
    }
  },
});

Deno.test("collect: exits 1 when it cannot reach Redis or listen, 2 on usage errors", async () => {
  await using work = await workDir();
  const redis = new RedisServer(); // never started: nothing listens on its port
  const noRedis = await Collect.fail([
    "--token-secret-file",
    work.secret,
    "--store",
    `redis://:hunter2@127.0.0.1:${redis.port}/0`,
  ]);
  assert.equal(noRedis.code, 1, noRedis.stderr);
  assert.match(noRedis.stderr, /Cannot connect to redis:\/\/:\*\*\*@127\.0\.0\.1:[0-9]+\/0/);
  assert.ok(!noRedis.stderr.includes("hunter2"), "no password in the logs");

  using busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (busy.addr as Deno.NetAddr).port;
  const noListen = await Collect.fail([
    "--token-secret-file",
    work.secret,
    "--http-listen",
    `127.0.0.1:${port}`,
    "--listen",
    "127.0.0.1:0",
  ]);
  assert.equal(noListen.code, 1, noListen.stderr);
  assert.match(noListen.stderr, new RegExp(`Cannot listen on 127\\.0\\.0\\.1:${port} \\(HTTP\\)`));

  const usage = await Collect.fail(["--token-secret-file", work.secret, "--store", "mongodb://x"]);
  assert.equal(usage.code, 2);
  assert.match(
    usage.stderr,
    /^netbird-ct collect: invalid --store "mongodb:\/\/x": .*\(see netbird-ct collect --help\)\n$/,
  );
});
