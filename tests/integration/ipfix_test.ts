/**
 * Real-collector IPFIX tests: the tracker runs in this process on live conntrack events of a
 * namespace pair (like kernel_test.ts test c), and its records go both to a JSON-lines array and
 * to an {@linkcode IpfixExporter} sending to `nfcapd` on 127.0.0.1 in the root namespace, with
 * `dumpcap` capturing the export for `tshark`. A second `nfcapd` is started only after the first
 * round of traffic, to show that a late collector decodes once templates are refreshed. The
 * second test does the same for drop records: packets an nft rule logs to NFLOG and drops, read
 * by a {@linkcode DropTracker} through the flow logger, as `--nflog-group` does.
 * Root only; needs nfcapd, nfdump, dumpcap and tshark (`scripts/setup.sh test`) and
 * libnetfilter_log.
 *
 * Run: `deno task test:kernel` (= `deno test --allow-all tests/integration`).
 */

import assert from "node:assert/strict";
import dgram from "node:dgram";
import { openEventSource, openLibrary, openNflogSource } from "../../ffi/mod.ts";
import { IpfixExporter } from "../../lib/ipfix_export.ts";
import {
  ConntrackTracker,
  DropTracker,
  flowIdFromUuid,
  FlowIdGenerator,
  FlowLogger,
  type FlowRecord,
  Overlay,
  toJsonLine,
  WindowAggregator,
} from "../../lib/mod.ts";
import { flush, ignore, peer, ping, type RecordLine } from "./_cli.ts";
import { ADDR, check, checkIn, createNetnsPair, Proc, run, runIn, waitUntil } from "./_netns.ts";

/** The DNAT rule in A sends 100.64.0.99:9999 to B's 9998. */
const NAT_ADDRESS = "100.64.0.99";
const NAT_PORT = 9999;
const NAT_TARGET_PORT = 9998;
const DOMAIN = 4242;

/** One flow the test makes and must find as an end record. */
interface Wanted {
  name: string;
  protocol: number;
  source: string;
  dest: string;
  /** Destination port, or ICMP type for ICMP. */
  port: number;
}

const ROUND_1: Wanted[] = [
  { name: "TCP v4 A→B", protocol: 6, source: ADDR.a4, dest: ADDR.b4, port: 9001 },
  { name: "TCP v6 A→B", protocol: 6, source: ADDR.a6, dest: ADDR.b6, port: 9002 },
  { name: "TCP v4 B→A", protocol: 6, source: ADDR.b4, dest: ADDR.a4, port: 9003 },
  { name: "UDP v6 A→B", protocol: 17, source: ADDR.a6, dest: ADDR.b6, port: 9005 },
  { name: "UDP v4 B→A", protocol: 17, source: ADDR.b4, dest: ADDR.a4, port: 9006 },
  { name: "TCP v4 A→NAT", protocol: 6, source: ADDR.a4, dest: NAT_ADDRESS, port: NAT_PORT },
  { name: "ping v4 A→B", protocol: 1, source: ADDR.a4, dest: ADDR.b4, port: 8 },
  { name: "ping v6 A→B", protocol: 58, source: ADDR.a6, dest: ADDR.b6, port: 128 },
];

const ROUND_2: Wanted[] = [
  { name: "UDP v4 A→B (late)", protocol: 17, source: ADDR.a4, dest: ADDR.b4, port: 9007 },
  { name: "TCP v4 A→B (late)", protocol: 6, source: ADDR.a4, dest: ADDR.b4, port: 9008 },
];

function matches(w: Wanted, l: RecordLine): boolean {
  const icmp = w.protocol === 1 || w.protocol === 58;
  return l.protocol === w.protocol && l.source_ip === w.source && l.dest_ip === w.dest &&
    (icmp ? l.icmp_type === w.port : l.dest_port === w.port);
}

async function round1(a: string, b: string): Promise<void> {
  const servers = [
    peer(b, "tcp-server", ADDR.b4, 9001, 1),
    peer(b, "tcp-server", ADDR.b6, 9002, 1),
    peer(a, "tcp-server", ADDR.a4, 9003, 1),
    peer(b, "udp-server", ADDR.b6, 9005, 1),
    peer(a, "udp-server", ADDR.a4, 9006, 1),
    peer(b, "tcp-server", ADDR.b4, NAT_TARGET_PORT, 1),
  ];
  await traffic(servers, () => [
    peer(a, "tcp-client", ADDR.b4, 9001, 1000),
    peer(a, "tcp-client", ADDR.b6, 9002, 2000),
    peer(b, "tcp-client", ADDR.a4, 9003, 3000),
    peer(a, "udp-client", ADDR.b6, 9005, 200),
    peer(b, "udp-client", ADDR.a4, 9006, 300),
    peer(a, "tcp-client", NAT_ADDRESS, NAT_PORT, 1500),
  ]);
  await ping(a, ADDR.b4);
  await ping(a, ADDR.b6);
}

async function round2(a: string, b: string): Promise<void> {
  const servers = [
    peer(b, "udp-server", ADDR.b4, 9007, 1),
    peer(b, "tcp-server", ADDR.b4, 9008, 1),
  ];
  await traffic(servers, () => [
    peer(a, "udp-client", ADDR.b4, 9007, 150),
    peer(a, "tcp-client", ADDR.b4, 9008, 700),
  ]);
}

/** Servers first (wait for "ready"), then clients; every process awaited. */
async function traffic(servers: Proc[], clients: () => Proc[]): Promise<void> {
  const started: Proc[] = [];
  try {
    await Promise.all(servers.map((s) => s.waitFor("ready")));
    started.push(...clients());
    await Promise.all([...started, ...servers].map((p) => p.success()));
  } finally {
    for (const p of [...started, ...servers]) await p[Symbol.asyncDispose]();
  }
}

/** Fails (not skips) when a collector tool is missing: `scripts/setup.sh test` installs them. */
async function requireTools(): Promise<void> {
  const tools = ["nfcapd", "nfdump", "dumpcap", "tshark"];
  const r = await run([
    "sh",
    "-c",
    tools.map((t) => `command -v ${t} >/dev/null || echo ${t}`).join(";"),
  ]);
  const missing = r.stdout.trim();
  assert.equal(missing, "", `missing ${missing.split("\n").join(", ")}: run scripts/setup.sh test`);
}

/** A UDP port on 127.0.0.1 that is free right now. */
async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => s.bind(0, "127.0.0.1", () => resolve()));
  const port = s.address().port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

async function startNfcapd(dir: string, port: number): Promise<Proc> {
  await Deno.mkdir(dir);
  const p = new Proc(["nfcapd", "-w", dir, "-p", String(port), "-b", "127.0.0.1"]);
  await p.waitFor("Startup nfcapd", "stderr");
  return p;
}

/** One flow of `nfdump -o json` (nfdump 1.7.1 field names). */
interface NfdumpFlow {
  type: string;
  first: string;
  last: string;
  proto: number;
  "in_packets": number;
  "in_bytes": number;
  "out_packets"?: number;
  "out_bytes"?: number;
  "src_port"?: number;
  "dst_port"?: number;
  "icmp_type"?: number;
  "icmp_code"?: number;
  "src4_addr"?: string;
  "dst4_addr"?: string;
  "src6_addr"?: string;
  "dst6_addr"?: string;
  direction: number;
  "src4_xlt_ip"?: string;
  "dst4_xlt_ip"?: string;
  "src_xlt_port"?: string;
  "dst_xlt_port"?: string;
}

const UTC = { env: { TZ: "UTC" } };

async function readNfdump(dir: string): Promise<NfdumpFlow[]> {
  const text = (await check(["nfdump", "-R", dir, "-o", "json"], UTC)).trim();
  if (text === "") return [];
  return (JSON.parse(text) as NfdumpFlow[]).filter((f) => f.type === "FLOW");
}

async function sequenceFailures(dir: string): Promise<number> {
  const text = await check(["nfdump", "-R", dir, "-I"], UTC);
  const m = /Sequence failures:\s*(\d+)/.exec(text);
  assert.ok(m !== null, `nfdump -I shows sequence failures:\n${text}`);
  return Number(m[1]);
}

/** nfdump prints local time without a zone; with TZ=UTC it is UTC. */
function nfTime(text: string): number {
  return Date.parse(`${text}Z`);
}

function lineKey(l: RecordLine): string {
  const icmp = l.protocol === 1 || l.protocol === 58;
  const ports = icmp ? `icmp ${l.icmp_type}/${l.icmp_code}` : `${l.source_port}>${l.dest_port}`;
  return `${l.protocol} ${l.source_ip} ${l.dest_ip} ${ports}`;
}

function nfKey(f: NfdumpFlow): string {
  const icmp = f.proto === 1 || f.proto === 58;
  const ports = icmp ? `icmp ${f.icmp_type}/${f.icmp_code}` : `${f.src_port}>${f.dst_port}`;
  return `${f.proto} ${f.src4_addr ?? f.src6_addr} ${f.dst4_addr ?? f.dst6_addr} ${ports}`;
}

function directionCode(direction: string): number {
  return direction === "ingress" ? 0 : direction === "egress" ? 1 : 0xff;
}

/**
 * Asserts that `flows` holds exactly one record per end line, matching it: addresses, ports or
 * ICMP type/code, protocol, both directions' counters, direction, times within 1 s.
 */
function assertMatches(
  what: string,
  ends: RecordLine[],
  starts: Map<string, RecordLine>,
  flows: NfdumpFlow[],
): void {
  const byKey = new Map<string, NfdumpFlow[]>();
  for (const f of flows) byKey.set(nfKey(f), [...(byKey.get(nfKey(f)) ?? []), f]);
  const unmatched = new Set(flows);
  for (const l of ends) {
    const candidates = (byKey.get(lineKey(l)) ?? []).filter((f) => unmatched.has(f));
    assert.ok(
      candidates.length >= 1,
      `${what}: a record for ${lineKey(l)}; nfdump has:\n${[...byKey.keys()].join("\n")}`,
    );
    const end = Date.parse(l.timestamp);
    candidates.sort((x, y) => Math.abs(nfTime(x.last) - end) - Math.abs(nfTime(y.last) - end));
    const f = candidates[0]!;
    unmatched.delete(f);
    const ingress = l.direction === "ingress";
    const label = `${what}: ${lineKey(l)}`;
    assert.deepEqual(
      {
        inPackets: f.in_packets,
        inBytes: f.in_bytes,
        outPackets: f.out_packets ?? 0,
        outBytes: f.out_bytes ?? 0,
        direction: f.direction,
      },
      {
        inPackets: ingress ? l.rx_packets : l.tx_packets,
        inBytes: ingress ? l.rx_bytes : l.tx_bytes,
        outPackets: ingress ? l.tx_packets : l.rx_packets,
        outBytes: ingress ? l.tx_bytes : l.rx_bytes,
        direction: directionCode(l.direction),
      },
      `${label}: counters (original = in, reply = out) and direction`,
    );
    const start = starts.get(l.flow_id);
    assert.ok(start !== undefined, `${label}: has a start line`);
    const dLast = Math.abs(nfTime(f.last) - end);
    const dFirst = Math.abs(nfTime(f.first) - Date.parse(start.timestamp));
    assert.ok(dLast <= 1000, `${label}: end ${f.last} vs ${l.timestamp}`);
    assert.ok(dFirst <= 1000, `${label}: start ${f.first} vs ${start.timestamp}`);
  }
  assert.deepEqual([...unmatched].map(nfKey), [], `${what}: no record without an end line`);
}

/** One frame of `tshark -V` for the IPFIX export. */
interface Frame {
  sequence: number;
  domain: number;
  /** Data records per data set ID. */
  sets: [id: number, records: number][];
  text: string;
}

function parseTshark(text: string): Frame[] {
  return text.split(/^Frame \d+:/m).slice(1).map((t) => {
    const sequence = /^\s*FlowSequence: (\d+)$/m.exec(t);
    const domain = /^\s*Observation Domain Id: (\d+)$/m.exec(t);
    assert.ok(sequence !== null && domain !== null, `an IPFIX header in frame:\n${t}`);
    const sets: [number, number][] = [];
    for (const m of t.matchAll(/^\s*Set \d+ \[id=(\d+)\](?: \((\d+) flows\))?/gm)) {
      const id = Number(m[1]);
      if (id >= 256) sets.push([id, Number(m[2] ?? 0)]);
    }
    return { sequence: Number(sequence[1]), domain: Number(domain[1]), sets, text: t };
  });
}

Deno.test({
  name: "IpfixExporter fed by the tracker on real traffic: nfcapd/nfdump show every ended flow " +
    "as the JSON lines do (v4/v6, TCP/UDP/ICMP, counters, times, NAT), tshark decodes the " +
    "capture with continuous sequence numbers, and a late nfcapd decodes after a refresh",
  ignore,
  async fn(): Promise<void> {
    await requireTools();
    await using ns = await createNetnsPair();
    const { a, b } = ns;
    const dir = await Deno.makeTempDir({ prefix: "nbct-ipfix-" });
    const procs: Proc[] = [];
    try {
      await checkIn(a, ["nft", "add", "table", "ip", "nbct_nat"]);
      await checkIn(a, [
        "nft",
        "add",
        "chain",
        "ip",
        "nbct_nat",
        "output",
        "{ type nat hook output priority -100 ; }",
      ]);
      await checkIn(a, [
        "nft",
        "add",
        "rule",
        "ip",
        "nbct_nat",
        "output",
        "ip",
        "daddr",
        NAT_ADDRESS,
        "tcp",
        "dport",
        String(NAT_PORT),
        "dnat",
        "to",
        `${ADDR.b4}:${NAT_TARGET_PORT}`,
      ]);

      const mainPort = await freeUdpPort();
      const latePort = await freeUdpPort();
      const pcap = `${dir}/export.pcapng`;
      const capture = new Proc([
        "dumpcap",
        "-i",
        "lo",
        "-f",
        `udp port ${mainPort}`,
        "-w",
        pcap,
        "-q",
      ]);
      procs.push(capture);
      const nfcapd = await startNfcapd(`${dir}/main`, mainPort);
      procs.push(nfcapd);
      await capture.waitFor("Capturing on", "stderr");

      const records: FlowRecord[] = [];
      const lines: RecordLine[] = [];
      using lib = openLibrary();
      const sysctls = ["net.netfilter.nf_conntrack_acct", "net.netfilter.nf_conntrack_timestamp"]
        .map((name) => lib.sysctl(name, a));
      const before = sysctls.map((s) => s.read().trim());
      try {
        for (const s of sysctls) s.write("1");
        using source = openEventSource(lib, { netns: a });
        const exporter = new IpfixExporter({
          collectors: [`127.0.0.1:${mainPort}`, `udp://127.0.0.1:${latePort}`],
          observationDomainId: DOMAIN,
          templateRefreshMs: 1000,
        });
        let tracker: ConntrackTracker | undefined;
        let firstRound = 0;
        try {
          tracker = new ConntrackTracker(
            () => source,
            {
              write: (r) => {
                records.push(...r);
                for (const x of r) lines.push(JSON.parse(toJsonLine(x)) as RecordLine);
                exporter.write(r);
              },
            },
            {
              overlay: new Overlay({
                networks: ["100.64.0.0/16", "fd00:64::/64"],
                addresses: [ADDR.a4, ADDR.a6],
              }),
              flowIds: new FlowIdGenerator(lib.flowNamespace(a)),
            },
          );
          const t = tracker;
          await t.start();
          const ended = (wanted: Wanted[]): Promise<void> => {
            const missing = (): Wanted[] =>
              wanted.filter((w) => !lines.some((l) => l.type === "end" && matches(w, l)));
            return waitUntil(
              () =>
                `end records of ${missing().map((w) => w.name).join(", ")}; tracker: ${
                  JSON.stringify(t.stats())
                }`,
              () => missing().length === 0,
            );
          };

          await round1(a, b);
          await flush(a);
          await ended(ROUND_1);
          firstRound = lines.filter((l) => l.type === "end").length;

          // The late collector: up only now; templates are due again after 1 s.
          const late = await startNfcapd(`${dir}/late`, latePort);
          procs.push(late);
          await new Promise((r) => setTimeout(r, 1200));
          await round2(a, b);
          await flush(a);
          await ended(ROUND_2);
          await t.stop();
        } finally {
          await tracker?.stop();
          await exporter.close();
        }
        const endLines = lines.filter((l) => l.type === "end");
        const starts = new Map(
          lines.filter((l) => l.type === "start").map((l) => [l.flow_id, l] as const),
        );
        const stats = exporter.stats();
        assert.equal(stats.records, endLines.length, "every end record exported, nothing else");
        assert.equal(stats.skipped, starts.size, "start records are not exported");
        for (const c of stats.collectors) {
          assert.deepEqual(
            [c.sentRecords, c.dropped, c.sendErrors, c.queued],
            [endLines.length, 0, 0, 0],
            `${c.collector} counters`,
          );
        }

        // Give the collectors a moment to read the last datagrams, then stop them: nfcapd writes
        // its file at exit.
        await new Promise((r) => setTimeout(r, 300));
        for (const p of procs) p.kill(p === capture ? "SIGINT" : "SIGTERM");
        for (const p of procs) await p.success();

        // Every wanted flow was seen, with real counters (accounting on) in both directions.
        for (const w of [...ROUND_1, ...ROUND_2]) {
          const found = endLines.filter((l) => matches(w, l));
          assert.equal(found.length, 1, `${w.name}: one end line`);
          const l = found[0]!;
          assert.ok(l.rx_packets > 0 && l.tx_packets > 0, `${w.name}: packets both ways`);
          assert.ok(l.rx_bytes > 0 && l.tx_bytes > 0, `${w.name}: bytes both ways`);
        }

        // nfcapd (up from the start): exactly the end lines, no sequence failure.
        const main = await readNfdump(`${dir}/main`);
        assertMatches("nfcapd", endLines, starts, main);
        assert.equal(await sequenceFailures(`${dir}/main`), 0, "nfdump sequence failures");
        const nat = main.filter((f) => f.dst4_addr === NAT_ADDRESS);
        assert.equal(nat.length, 1, "the NATed flow");
        const natRecord = records.find((r) => r.type === "end" && r.destIp === NAT_ADDRESS);
        assert.ok(natRecord?.postNat !== undefined, "the tracker saw the NAT");
        assert.deepEqual(
          [nat[0]!.src4_xlt_ip, nat[0]!.src_xlt_port, nat[0]!.dst4_xlt_ip, nat[0]!.dst_xlt_port],
          [ADDR.a4, String(natRecord.sourcePort), ADDR.b4, String(NAT_TARGET_PORT)],
          "post-NAT addresses and ports",
        );
        assert.deepEqual(
          main.filter((f) => f.dst4_xlt_ip !== undefined && f !== nat[0]).map(nfKey),
          [],
          "no NAT fields on flows without NAT",
        );

        // The late nfcapd: the second round exactly (it was down during the first one).
        const late = await readNfdump(`${dir}/late`);
        assertMatches("late nfcapd", endLines.slice(firstRound), starts, late);

        // tshark: the capture decodes cleanly and sequence numbers are continuous.
        const decoded = await check([
          "tshark",
          "-r",
          pcap,
          "-d",
          `udp.port==${mainPort},cflow`,
          "-V",
        ]);
        assert.doesNotMatch(decoded, /malformed/i, "no malformed packet");
        assert.doesNotMatch(decoded, /no template/i, "no data without its template");
        const frames = parseTshark(decoded);
        assert.equal(frames.length, stats.collectors[0]!.sentMessages, "every message captured");
        let expected = 0;
        for (const [i, f] of frames.entries()) {
          assert.equal(f.domain, DOMAIN);
          assert.equal(f.sequence, expected, `sequence number of message ${i}`);
          expected += f.sets.reduce((n, [, k]) => n + k, 0);
        }
        const flowRecords = frames.flatMap((f) => f.sets).filter(([id]) => id !== 272)
          .reduce((n, [, k]) => n + k, 0);
        assert.equal(flowRecords, endLines.length, "tshark decodes every flow record");
        const last = frames.at(-1)!.text;
        assert.match(last, new RegExp(`FlowsExp: ${endLines.length}\\b`), "final statistics");
        assert.match(last, /Not Sent Flows: 0\b/);
      } finally {
        sysctls.forEach((s, i) => s.write(before[i]!));
      }
    } finally {
      for (const p of procs) await p[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

// ---------------------------------------------------------------------------------------------
// Drop records

const DROP_GROUP = 8;
const DROP_PORT = 9099;
const DROP_RULE = "rule-abc";
const DROP_RULE6 = "deny-ping6";

/** One drop record as `tshark -V` shows it (template 273–276). */
interface TsharkDrop {
  /** `Label: value` lines of the record, by label. */
  fields: Map<string, string>;
  /** The rule ID element's bytes up to the first zero, as text. */
  ruleId: string;
}

/** The drop records of a `tshark -V` decode: data records of sets 273–276. */
function parseTsharkDrops(text: string): TsharkDrop[] {
  const out: TsharkDrop[] = [];
  let inDropSet = false;
  let current: TsharkDrop | undefined;
  for (const line of text.split("\n")) {
    const set = /^\s*Set \d+ \[id=(\d+)\]/.exec(line);
    if (set !== null || /^Frame \d+:/.test(line)) {
      inDropSet = set !== null && Number(set[1]) >= 273 && Number(set[1]) <= 276;
      current = undefined;
      continue;
    }
    if (!inDropSet) continue;
    if (/^\s*Flow \d+$/.test(line)) {
      current = { fields: new Map(), ruleId: "" };
      out.push(current);
      continue;
    }
    if (current === undefined) continue;
    const entry = /Enterprise Private entry: .*Type 1: Value \(hex bytes\): ([0-9a-f ]+)/.exec(
      line,
    );
    if (entry !== null && entry[1] !== undefined) {
      const bytes = entry[1].trim().split(" ").map((h) => parseInt(h, 16));
      const end = bytes.indexOf(0);
      current.ruleId = new TextDecoder().decode(
        Uint8Array.from(end < 0 ? bytes : bytes.slice(0, end)),
      );
      continue;
    }
    const status = /= (ForwardingStatus\w*): (.*)$/.exec(line);
    if (status !== null) {
      current.fields.set(status[1]!, status[2]!);
      continue;
    }
    const kv = /^\s*([A-Za-z][A-Za-z0-9 ]*?): (.*)$/.exec(line);
    if (kv !== null) current.fields.set(kv[1]!, kv[2]!);
  }
  return out;
}

/** The number in parentheses at the end of a tshark value, e.g. `TCP (6)` → 6. */
function code(value: string | undefined): number | undefined {
  const m = value === undefined ? null : /\((\d+)\)$/.exec(value);
  return m === null ? undefined : Number(m[1]);
}

Deno.test({
  name: "IpfixExporter fed by NFLOG drops through the flow logger: tshark decodes every drop " +
    "record with firewallEvent 3 (flow denied), forwardingStatus ACL deny, its tuple and rule " +
    "ID; nfcapd stores them as flows with no sequence or decode error; the window aggregates " +
    "count them in num_of_drops with the rule ID",
  ignore,
  async fn(): Promise<void> {
    await requireTools();
    await using ns = await createNetnsPair();
    const { a, b } = ns;
    const dir = await Deno.makeTempDir({ prefix: "nbct-ipfix-drop-" });
    const procs: Proc[] = [];
    try {
      await checkIn(a, ["nft", "add table inet nbctdrop"]);
      await checkIn(a, [
        "nft",
        "add chain inet nbctdrop input { type filter hook input priority -10 ; policy accept ; }",
      ]);
      await checkIn(a, [
        "nft",
        `add rule inet nbctdrop input tcp dport ${DROP_PORT} ` +
        `log group ${DROP_GROUP} prefix "${DROP_RULE}" drop`,
      ]);
      await checkIn(a, [
        "nft",
        "add rule inet nbctdrop input icmpv6 type echo-request " +
        `log group ${DROP_GROUP} prefix "${DROP_RULE6}" drop`,
      ]);

      const port = await freeUdpPort();
      const pcap = `${dir}/export.pcapng`;
      const capture = new Proc(["dumpcap", "-i", "lo", "-f", `udp port ${port}`, "-w", pcap, "-q"]);
      procs.push(capture);
      const nfcapd = await startNfcapd(`${dir}/main`, port);
      procs.push(nfcapd);
      await capture.waitFor("Capturing on", "stderr");

      const overlay = new Overlay({
        networks: ["100.64.0.0/16", "fd00:64::/64"],
        addresses: [ADDR.a4, ADDR.a6],
      });
      const records: FlowRecord[] = [];
      const windows: FlowRecord[] = [];
      using lib = openLibrary();
      const exporter = new IpfixExporter({
        collectors: [`127.0.0.1:${port}`],
        observationDomainId: DOMAIN,
      });
      // As main.ts wires --nflog-group and --window: drops → logger → IPFIX and the windows.
      const aggregator = new WindowAggregator(
        { write: (r) => windows.push(...r) },
        { windowMs: 600_000 },
      );
      const logger = new FlowLogger({
        write: (r) => {
          records.push(...r);
          exporter.write(r);
          aggregator.write(r);
        },
      }, { overlay });
      const drops = new DropTracker(
        () => openNflogSource(lib, { group: DROP_GROUP, netns: a }),
        logger,
        { overlay },
      );
      const tcpDrops = (): FlowRecord[] => records.filter((r) => r.protocol === 6);
      const pingDrops = (): FlowRecord[] => records.filter((r) => r.protocol === 58);
      try {
        drops.start();
        {
          // The SYNs are dropped, so the connect never completes: the peer is killed on dispose.
          await using _client = peer(b, "tcp-connect", ADDR.a4, DROP_PORT, 1);
          const pinged = await runIn(b, ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", ADDR.a6]);
          assert.notEqual(pinged.code, 0, "the pings are dropped");
          await waitUntil(
            () =>
              `TCP and ICMPv6 drop records; have ${records.length}: ${
                JSON.stringify(drops.stats())
              }`,
            () => tcpDrops().length > 0 && pingDrops().length >= 2,
            15_000,
          );
        }
      } finally {
        await drops.stop();
        aggregator.close();
        await exporter.close();
      }
      await new Promise((r) => setTimeout(r, 300));
      for (const p of procs) p.kill(p === capture ? "SIGINT" : "SIGTERM");
      for (const p of procs) await p.success();

      // What the tracker wrote: drop records only, with the rule IDs of the log prefixes.
      assert.ok(records.every((r) => r.type === "drop"), "drop records only");
      assert.ok(tcpDrops().every((r) => r.ruleId === DROP_RULE));
      assert.ok(pingDrops().every((r) => r.ruleId === DROP_RULE6));
      assert.equal(tcpDrops().length + pingDrops().length, records.length);

      // The exporter sent every one, and counted them as records.
      const stats = exporter.stats();
      assert.deepEqual(
        [stats.records, stats.drops, stats.skipped, stats.invalid],
        [records.length, records.length, 0, 0],
      );
      const c = stats.collectors[0]!;
      assert.deepEqual(
        [c.sentRecords, c.dropped, c.sendErrors, c.queued],
        [records.length, 0, 0, 0],
        "collector counters",
      );

      // tshark: every drop record decodes, with the IANA elements and the rule ID.
      const decoded = await check(["tshark", "-r", pcap, "-d", `udp.port==${port},cflow`, "-V"]);
      assert.doesNotMatch(decoded, /malformed/i, "no malformed packet");
      assert.doesNotMatch(decoded, /no template/i, "no data without its template");
      const frames = parseTshark(decoded);
      assert.equal(frames.length, c.sentMessages, "every message captured");
      let expected = 0;
      for (const [i, f] of frames.entries()) {
        assert.equal(f.sequence, expected, `sequence number of message ${i}`);
        expected += f.sets.reduce((n, [, k]) => n + k, 0);
      }
      const shown = parseTsharkDrops(decoded);
      assert.equal(shown.length, records.length, "tshark decodes every drop record");
      const byFlowId = new Map(shown.map((d) => [d.fields.get("Flow Id"), d]));
      for (const r of records) {
        const d = byFlowId.get(String(flowIdFromUuid(r.flowId)));
        const label = `drop ${r.flowId} (${r.protocol} ${r.sourceIp} → ${r.destIp})`;
        assert.ok(d !== undefined, `${label}: in the capture`);
        const f = d.fields;
        const icmp = r.protocol === 58;
        assert.deepEqual(
          {
            firewallEvent: code(f.get("Firewall Event")),
            forwardingStatus: code(f.get("ForwardingStatus")),
            dropCode: code(f.get("ForwardingStatusDropCode")),
            source: f.get("SrcAddr"),
            destination: f.get("DstAddr"),
            protocol: code(f.get("Protocol")),
            ports: icmp ? undefined : [Number(f.get("SrcPort")), Number(f.get("DstPort"))],
            icmp: icmp
              ? [Number(f.get("IPv6 ICMP Type")), Number(f.get("IPv6 ICMP Code"))]
              : undefined,
            direction: code(f.get("Direction")),
            octets: Number(f.get("Octets")),
            packets: Number(f.get("Packets")),
            ruleId: d.ruleId,
          },
          {
            firewallEvent: 3, // flow denied
            forwardingStatus: 2, // dropped
            dropCode: 1, // ACL deny
            source: r.sourceIp,
            destination: r.destIp,
            protocol: r.protocol,
            ports: icmp ? undefined : [r.sourcePort, DROP_PORT],
            icmp: icmp ? [128, 0] : undefined,
            direction: 0, // ingress
            octets: Number(r.rxBytes),
            packets: 1,
            ruleId: r.ruleId,
          },
          label,
        );
      }

      // nfcapd/nfdump 1.7.1: its IPFIX decoder maps neither firewallEvent nor forwardingStatus
      // (only its NetFlow v9 decoder knows NSEL events), so the drops are plain one-way flows; the
      // rule ID element is skipped. No sequence failure, no bad packet.
      const flows = await readNfdump(`${dir}/main`);
      const lineOf = (r: FlowRecord): RecordLine => JSON.parse(toJsonLine(r)) as RecordLine;
      assert.deepEqual(
        flows.map((x) =>
          `${nfKey(x)} ${x.in_packets}/${x.in_bytes} out=${x.out_packets ?? 0} dir=${x.direction}`
        ).sort(),
        records.map((r) => `${lineKey(lineOf(r))} 1/${r.rxBytes} out=0 dir=0`).sort(),
        "nfdump: one flow per drop record",
      );
      for (const x of flows) {
        const near = records.some((r) => Math.abs(nfTime(x.first) - r.timestamp.getTime()) <= 1000);
        assert.ok(near && x.first === x.last, `nfdump times: ${x.first} ${x.last}`);
      }
      assert.equal(await sequenceFailures(`${dir}/main`), 0, "nfdump sequence failures");
      const summary = /Flows: (\d+).*Sequence Errors: (\d+), Bad Packets: (\d+)/.exec(
        nfcapd.stderr,
      );
      assert.ok(summary !== null, `nfcapd summary:\n${nfcapd.stderr}`);
      assert.deepEqual(
        summary.slice(1).map(Number),
        [records.length, 0, 0],
        "nfcapd: flows, sequence errors, bad packets",
      );

      // The same drops, aggregated: one window record per key, counting them.
      const tcpWindow = windows.find((w) => w.protocol === 6);
      const pingWindow = windows.find((w) => w.protocol === 58);
      assert.equal(windows.length, 2, JSON.stringify(windows.map(lineOf)));
      assert.deepEqual(
        [tcpWindow?.window?.numOfDrops, tcpWindow?.window?.numOfStarts, tcpWindow?.ruleId],
        [tcpDrops().length, 0, DROP_RULE],
      );
      assert.deepEqual(
        [pingWindow?.window?.numOfDrops, pingWindow?.ruleId, pingWindow?.icmpType],
        [pingDrops().length, DROP_RULE6, 128],
      );
      assert.equal(lineOf(tcpWindow!).num_of_drops, tcpDrops().length);
    } finally {
      for (const p of procs) await p[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
