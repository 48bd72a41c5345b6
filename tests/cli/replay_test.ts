import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { parseReplayArgs, runReplay } from "../../lib/cli/replay.ts";
import { UsageError } from "../../lib/cli/args.ts";
import { type PcapRecordInit, writePcap, writePcapng } from "../_fakes/pcap_writer.ts";
import { concat, ethernet, icmp, ipv4, ipv6, tcp, udp } from "../_fakes/packet_builder.ts";

const MAIN = fileURLToPath(new URL("../../main.ts", import.meta.url));
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const decoder = new TextDecoder();

const A = "100.64.0.1";
const B = "100.64.0.2";
const A6 = "fd00:64::1";
const B6 = "fd00:64::2";
const FLAGS = ["-n", "100.64.0.0/16", "-n", "fd00:64::/64", "-a", A, "-a", A6];
const SYN = 0x02;
const ACK = 0x10;
const FIN = 0x01;
const PSH = 0x08;
const T0 = 1_700_000_000; // capture time, seconds

interface Line {
  type: string;
  timestamp: string;
  "flow_id": string;
  direction: string;
  protocol: number;
  "source_ip": string;
  "dest_ip": string;
  "source_port": number;
  "dest_port": number;
  "icmp_type": number;
  "icmp_code": number;
  "rx_packets": number;
  "tx_packets": number;
  "rx_bytes": number;
  "tx_bytes": number;
  "conntrack_id": number;
  "rule_id": string | null;
}

interface Result {
  code: number;
  stdout: string;
  stderr: string;
  records: Line[];
}

async function replayBytes(file: Uint8Array, extra: string[] = []): Promise<Result> {
  const dir = await Deno.makeTempDir({ prefix: "nbct-replay-unit-" });
  try {
    const path = `${dir}/capture`;
    await Deno.writeFile(path, file);
    let stdout = "";
    let stderr = "";
    const code = await runReplay([...FLAGS, ...extra, path], {
      stdout: { writeSync: (p) => (stdout += decoder.decode(p), p.length) },
      stderr: { writeSync: (p) => (stderr += decoder.decode(p), p.length) },
      stderrIsTerminal: false,
    });
    const records = stdout.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Line);
    return { code, stdout, stderr: stderr.replaceAll(path, "FILE"), records };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A raw-IP pcap record at T0 + ms milliseconds. */
function at(ms: number, data: Uint8Array): PcapRecordInit {
  return { seconds: T0 + Math.floor(ms / 1000), fraction: (ms % 1000) * 1000, data };
}

function tcp4(out: boolean, flags: number, payload = 0): Uint8Array {
  return ipv4({
    source: out ? A : B,
    destination: out ? B : A,
    protocol: 6,
    payload: tcp(out ? 40000 : 80, out ? 80 : 40000, flags, new Uint8Array(payload)),
  });
}

/** What matters in a record: everything but the random IDs. */
function summary(r: Line): string {
  const ports = r.protocol === 6 || r.protocol === 17
    ? `${r.source_port}->${r.dest_port}`
    : `icmp ${r.icmp_type}/${r.icmp_code}`;
  return `${r.type} ${r.direction} ${r.protocol} ${r.source_ip}->${r.dest_ip} ${ports} ` +
    `tx ${r.tx_packets}/${r.tx_bytes} rx ${r.rx_packets}/${r.rx_bytes}`;
}

/** TCP handshake, data both ways, FIN close; a UDP exchange opened by the peer; a v6 ping. */
function mixedCapture(): Uint8Array {
  return writePcap({ linkType: 101 }, [
    at(0, tcp4(true, SYN)), // 40
    at(1, tcp4(false, SYN | ACK)), // 40
    at(2, tcp4(true, ACK)), // 40
    at(3, tcp4(true, PSH | ACK, 100)), // 140
    at(4, tcp4(false, PSH | ACK, 50)), // 90
    at(5, tcp4(true, FIN | ACK)), // 40
    at(6, tcp4(false, FIN | ACK)), // 40
    at(7, tcp4(true, ACK)), // 40, the final ACK (TIME-WAIT)
    // UDP opened by the peer: 28 + 10 in, 28 + 20 out.
    at(
      10,
      ipv4({ source: B, destination: A, protocol: 17, payload: udp(5353, 53, new Uint8Array(10)) }),
    ),
    at(
      11,
      ipv4({ source: A, destination: B, protocol: 17, payload: udp(53, 5353, new Uint8Array(20)) }),
    ),
    // Non-overlay traffic: not tracked.
    at(12, ipv4({ source: "10.0.0.1", destination: "10.0.0.2", protocol: 17, payload: udp(1, 2) })),
    // NDP neighbor solicitation from A: never a flow.
    at(
      13,
      ipv6({
        source: A6,
        destination: "ff02::1:ff00:2",
        nextHeader: 58,
        payload: icmp(135, 0, 0, 0, new Uint8Array(16)),
      }),
    ),
    // Ping v6: 40 + 8 + 16 each way.
    at(
      20,
      ipv6({
        source: A6,
        destination: B6,
        nextHeader: 58,
        payload: icmp(128, 0, 7, 1, new Uint8Array(16)),
      }),
    ),
    at(
      21,
      ipv6({
        source: B6,
        destination: A6,
        nextHeader: 58,
        payload: icmp(129, 0, 7, 1, new Uint8Array(16)),
      }),
    ),
  ]);
}

Deno.test("replay: TCP, UDP and ping flows from a pcap, with directions and counters", async () => {
  const r = await replayBytes(mixedCapture());
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.records.map(summary), [
    "start egress 6 100.64.0.1->100.64.0.2 40000->80 tx 1/40 rx 0/0",
    "start ingress 17 100.64.0.2->100.64.0.1 5353->53 tx 0/0 rx 1/38",
    "start egress 58 fd00:64::1->fd00:64::2 icmp 128/0 tx 1/64 rx 0/0",
    // --tcp-end expire (default): the TIME-WAIT entry ends at the end of the file, with the
    // final ACK (40 bytes), as conntrack counts it.
    "end egress 6 100.64.0.1->100.64.0.2 40000->80 tx 5/300 rx 3/170",
    "end ingress 17 100.64.0.2->100.64.0.1 5353->53 tx 1/48 rx 1/38",
    "end egress 58 fd00:64::1->fd00:64::2 icmp 128/0 tx 1/64 rx 1/64",
  ]);
  for (const rec of r.records) {
    assert.equal(rec.rule_id, null);
    assert.equal(rec.conntrack_id, 0);
  }
  const byFlow = Map.groupBy(r.records, (x) => x.flow_id);
  assert.equal(byFlow.size, 3, "start and end share a flow_id");
  // Record timestamps are capture times.
  assert.equal(r.records[0]!.timestamp, new Date(T0 * 1000).toISOString());
  assert.equal(
    r.stderr,
    "Replayed: packets=14 decoded=14 skipped=0 outside_overlay=1 fragments=0 ndp_mld=1 " +
      "tracked=12 flows=3 records=6\n",
  );
});

Deno.test("replay --tcp-end close: NetBird's end at TIME-WAIT, without the final ACK", async () => {
  const r = await replayBytes(mixedCapture(), ["--tcp-end", "close"]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.records.map(summary), [
    "start egress 6 100.64.0.1->100.64.0.2 40000->80 tx 1/40 rx 0/0",
    // NetBird reports the end on the move to TIME-WAIT: the final ACK (40 bytes) is not in it.
    "end egress 6 100.64.0.1->100.64.0.2 40000->80 tx 4/260 rx 3/170",
    "start ingress 17 100.64.0.2->100.64.0.1 5353->53 tx 0/0 rx 1/38",
    "start egress 58 fd00:64::1->fd00:64::2 icmp 128/0 tx 1/64 rx 0/0",
    "end ingress 17 100.64.0.2->100.64.0.1 5353->53 tx 1/48 rx 1/38",
    "end egress 58 fd00:64::1->fd00:64::2 icmp 128/0 tx 1/64 rx 1/64",
  ]);
  // The end record's time is the packet that moved the flow to TIME-WAIT (the peer's FIN).
  assert.equal(r.records[1]!.timestamp, new Date(T0 * 1000 + 6).toISOString());
});

Deno.test("replay --tcp-end expire: a TIME-WAIT flow ends when TIME-WAIT expires in capture time", async () => {
  // The close, then 10 minutes of unrelated UDP: the first cleanup after TIME-WAIT's 4 idle
  // minutes (cleanups run every 5 min of capture time) ends the TCP flow, with the final ACK,
  // long before the file ends.
  const later = writePcap({ linkType: 101 }, [
    at(0, tcp4(true, SYN)),
    at(1, tcp4(false, SYN | ACK)),
    at(2, tcp4(true, FIN | ACK)),
    at(3, tcp4(false, FIN | ACK)),
    at(4, tcp4(true, ACK)),
    ...[1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((min) =>
      at(
        min * 60_000,
        ipv4({ source: A, destination: B, protocol: 17, payload: udp(7000 + min, 53) }),
      )
    ),
  ]);
  const r = await replayBytes(later, ["--tcp-end", "expire"]);
  assert.equal(r.code, 0, r.stderr);
  const tcpEnd = r.records.find((x) => x.protocol === 6 && x.type === "end");
  assert.ok(tcpEnd !== undefined, JSON.stringify(r.records));
  assert.equal(summary(tcpEnd), "end egress 6 100.64.0.1->100.64.0.2 40000->80 tx 3/120 rx 2/80");
  // Ended by the cleanup at 5 min (the first cleanup ran at the first packet).
  assert.equal(tcpEnd.timestamp, new Date(T0 * 1000 + 300_000).toISOString());
  assert.notEqual(r.records.at(-1), tcpEnd, "ended before the end of the file");
});

Deno.test("replay: timeouts run in capture time (an idle UDP flow ends before a later packet)", async () => {
  const udpOut = (ms: number, port: number): PcapRecordInit =>
    at(ms, ipv4({ source: A, destination: B, protocol: 17, payload: udp(port, 53, [1, 2]) }));
  const r = await replayBytes(
    writePcap({ linkType: 101 }, [udpOut(0, 1000), udpOut(120_000, 1001)]),
  );
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.records.map((x) => `${x.type} ${x.source_port}`), [
    "start 1000",
    "end 1000",
    "start 1001",
    "end 1001",
  ]);
  // The first flow ended at a cleanup in capture time, before the second packet.
  const end = Date.parse(r.records[1]!.timestamp);
  assert.ok(end > T0 * 1000 && end <= T0 * 1000 + 120_000, r.records[1]!.timestamp);
});

Deno.test("replay: pcapng over Ethernet with ARP (skipped, counted) and an IPv4 ping", async () => {
  const arp = ethernet(0x0806, new Uint8Array(28));
  const echo = (out: boolean, type: number): Uint8Array =>
    ethernet(
      0x0800,
      ipv4({
        source: out ? A : B,
        destination: out ? B : A,
        protocol: 1,
        payload: icmp(type, 0, 9, 1, new Uint8Array(56)),
      }),
    );
  const file = writePcapng([
    { type: "section" },
    { type: "interface", linkType: 1, tsresol: 9 },
    { type: "enhanced", interfaceId: 0, ticks: BigInt(T0) * 1_000_000_000n, data: arp },
    {
      type: "enhanced",
      interfaceId: 0,
      ticks: BigInt(T0) * 1_000_000_000n + 1n,
      data: echo(true, 8),
    },
    {
      type: "enhanced",
      interfaceId: 0,
      ticks: BigInt(T0) * 1_000_000_000n + 2n,
      data: echo(false, 0),
    },
  ]);
  const r = await replayBytes(file);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.records.map(summary), [
    "start egress 1 100.64.0.1->100.64.0.2 icmp 8/0 tx 1/84 rx 0/0",
    "end egress 1 100.64.0.1->100.64.0.2 icmp 8/0 tx 1/84 rx 1/84",
  ]);
  assert.match(r.stderr, /^Replayed: packets=3 decoded=2 skipped=1 skipped_not_ip=1 /);
});

Deno.test("replay: a truncated last record is a warning; the rest is replayed, exit 0", async () => {
  const whole = mixedCapture();
  const r = await replayBytes(whole.subarray(0, whole.length - 10));
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 2, r.stderr);
  assert.match(
    lines[0]!,
    /^netbird-ct replay: warning: FILE: Cannot parse pcap at offset \d+: record is truncated/,
  );
  const offset = Number(/offset (\d+)/.exec(lines[0]!)![1]);
  assert.equal(offset, whole.length - (16 + 64), "the last record's offset");
  assert.match(lines[1]!, /^Replayed: packets=13 /);
  // The reply of the ping is lost: its flow ends with rx 0.
  assert.equal(
    summary(r.records.at(-1)!),
    "end egress 58 fd00:64::1->fd00:64::2 icmp 128/0 tx 1/64 rx 0/0",
  );
});

Deno.test("replay: garbage is one error line with the byte offset, exit 1", async () => {
  const garbage = await replayBytes(new TextEncoder().encode("this is not a capture file\n"));
  assert.equal(garbage.code, 1);
  assert.equal(garbage.records.length, 0);
  assert.match(garbage.stderr, /^netbird-ct replay: FILE: Cannot parse capture at offset 0: .+\n$/);

  // A valid header and record (24 + 16 + 40 bytes), then a record whose captured length (at
  // offset 80 + 8) is absurd.
  const bad = concat(writePcap({ linkType: 101 }, [at(0, tcp4(true, SYN))]), [
    ...new Uint8Array(8),
    0xff,
    0xff,
    0xff,
    0x7f,
    0xff,
    0xff,
    0xff,
    0x7f,
  ]);
  const r = await replayBytes(bad);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^netbird-ct replay: FILE: Cannot parse pcap at offset 88: record captured length .+\n$/,
  );

  const empty = await replayBytes(new Uint8Array(0));
  assert.equal(empty.code, 1);
  assert.match(empty.stderr, /offset 0: file is empty\n$/);
});

Deno.test("replay: usage errors name the flag", () => {
  const cases: [string[], RegExp][] = [
    [["-a", A, "x.pcap"], /missing --network/],
    [["-n", "100.64.0.0/16", "x.pcap"], /missing --address/],
    [["-n", "100.64.0.0/16", "-a", A], /missing FILE/],
    [["-n", "300.0.0.0/8", "-a", A, "x"], /invalid --network "300\.0\.0\.0\/8"/],
    [["-n", "100.64.0.0/16", "-a", "nope", "x"], /invalid --address "nope"/],
    [[...FLAGS, "--log-level", "loud", "x"], /invalid --log-level "loud"/],
    [
      [...FLAGS, "--tcp-end", "destroy", "x"],
      /^invalid --tcp-end "destroy": expected expire or close$/,
    ],
    [[...FLAGS, "--tcp-end=", "x"], /^invalid --tcp-end "": expected expire or close$/],
    [[...FLAGS, "--bogus", "x"], /unknown option "--bogus"/],
    [[...FLAGS, "x", "y"], /unexpected argument "y"/],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseReplayArgs(args), (err: unknown) => {
      assert.ok(err instanceof UsageError);
      assert.match(err.message, message);
      return true;
    });
  }
  assert.equal(parseReplayArgs(["--help"]).help, true);
  assert.equal(parseReplayArgs([...FLAGS, "x"]).tcpEnd, "expire", "default");
  assert.equal(parseReplayArgs([...FLAGS, "--tcp-end", "close", "x"]).tcpEnd, "close");
  assert.equal(parseReplayArgs([...FLAGS, "--tcp-end=expire", "x"]).tcpEnd, "expire");
});

Deno.test("netbird-ct replay via main.ts: bad usage exits 2 with one line; --help exits 0", async () => {
  const run = async (
    ...args: string[]
  ): Promise<{ code: number; stdout: string; stderr: string }> => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", MAIN, "replay", ...args],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  };
  const bad = await run("-n", "100.64.0.0/16", "x.pcap");
  assert.equal(bad.code, 2);
  assert.equal(bad.stdout, "");
  assert.equal(
    bad.stderr,
    "netbird-ct replay: missing --address: the capturing host's address(es), such as " +
      "-a 100.64.0.1 (see netbird-ct replay --help)\n",
  );
  const badEnd = await run(...FLAGS, "--tcp-end", "fin", "x.pcap");
  assert.equal(badEnd.code, 2);
  assert.equal(
    badEnd.stderr,
    'netbird-ct replay: invalid --tcp-end "fin": expected expire or close ' +
      "(see netbird-ct replay --help)\n",
  );
  const help = await run("--help");
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^netbird-ct replay: /);
  assert.match(help.stdout, /--tcp-end WHEN .* default: expire\n/);
  assert.match(help.stdout, /expire: when its entry leaves the tracker's table/);
  assert.match(help.stdout, /close: when the connection closes/);
  const missing = await run(...FLAGS, "/nonexistent/capture.pcap");
  assert.equal(missing.code, 1);
  assert.match(
    missing.stderr,
    /^netbird-ct replay: cannot open "\/nonexistent\/capture\.pcap": .+\n$/,
  );
});
