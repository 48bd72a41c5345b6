/**
 * Real-kernel tests of the flow logger behind the CLI: the collection policy (DNS, exit-node
 * traffic), resource IDs from `--routes` (with SIGHUP reloads), `--active-timeout` updates against
 * the kernel's counters, and `--window` aggregation against a second, per-event CLI listening to
 * the same namespace. Each test makes its own namespace pair (see `_netns.ts`). Root only.
 *
 * Run: `deno task test:kernel`, or `deno test --allow-all tests/integration/logger_test.ts`.
 */

import assert from "node:assert/strict";
import {
  ADDR,
  createNetnsPair,
  MARK_IN,
  MARKED_OTHER_PORT,
  type Proc,
  runIn,
  spawnIn,
  waitUntil,
} from "./_netns.ts";
import {
  DENO,
  flush,
  ignore,
  interrupt,
  type KernelEvent,
  MAIN,
  parseKernel,
  parseSummary,
  peer,
  ping,
  readRecords,
  READY,
  type RecordLine,
  ROOT,
  startCli,
  type Summary,
  waitOutput,
} from "./_cli.ts";

// ---------------------------------------------------------------------------------------------
// Helpers.

/** What each test gets: a fresh namespace pair (A under test, B its peer) and a scratch dir. */
interface Lab {
  /** Namespace under test. */
  a: string;
  /** Its peer. */
  b: string;
  /** A temporary directory for output and routes files. */
  dir: string;
}

/** A root-only test in its own namespace pair and directory, both removed afterwards. */
function labTest(name: string, fn: (lab: Lab) => Promise<void>): void {
  Deno.test({
    name,
    ignore,
    async fn(): Promise<void> {
      await using ns = await createNetnsPair();
      const dir = await Deno.makeTempDir({ prefix: "nbct-logger-" });
      try {
        await fn({ a: ns.a, b: ns.b, dir });
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

/** Starts the CLI in `ns` and waits until it listens; kills it again if it never does. */
async function listening(ns: string, output: string, extra: string[] = []): Promise<Proc> {
  const cli = startCli(ns, output, ["--stats-interval", "0", ...extra]);
  try {
    await cli.waitFor(READY, "stderr", 15_000);
  } catch (err) {
    await cli[Symbol.asyncDispose]();
    throw err;
  }
  return cli;
}

/** Stops the CLI with SIGINT, asserts exit 0 and returns its summary. */
async function stop(cli: Proc): Promise<Summary> {
  assert.equal(await interrupt(cli), 0, `exit code after SIGINT; stderr:\n${cli.stderr}`);
  return parseSummary(cli.stderr);
}

/** Runs peer processes to completion (servers first, once ready), disposing every one. */
async function traffic(servers: Proc[], clients: () => Proc[]): Promise<void> {
  const started: Proc[] = [...servers];
  try {
    await Promise.all(servers.map((s) => s.waitFor("ready")));
    started.push(...clients());
    await Promise.all(started.map((p) => p.success()));
  } finally {
    for (const p of started) await p[Symbol.asyncDispose]();
  }
}

/** A record's connection: protocol, original tuple and conntrack id. */
function connection(r: RecordLine): string {
  return `${r.protocol} ${r.source_ip}:${r.source_port} > ${r.dest_ip}:${r.dest_port} ` +
    `#${r.conntrack_id}`;
}

/** Records grouped by connection, in file order. */
function byConnection(records: RecordLine[]): Map<string, RecordLine[]> {
  const flows = new Map<string, RecordLine[]>();
  for (const r of records) {
    const k = connection(r);
    flows.set(k, [...(flows.get(k) ?? []), r]);
  }
  return flows;
}

/** Asserts that every connection has exactly one start then one end, sharing the flow_id. */
function assertPaired(records: RecordLine[], what: string): void {
  for (const [k, rs] of byConnection(records)) {
    assert.deepEqual(rs.map((r) => r.type), ["start", "end"], `${what}: ${k}: start, end`);
    assert.equal(rs[0]!.flow_id, rs[1]!.flow_id, `${what}: ${k}: one flow_id`);
    assert.equal(rs[0]!.reason, undefined, `${what}: ${k}: from kernel events`);
  }
}

/** Matches records by protocol, destination and destination port. */
function to(
  protocol: number,
  dest: string,
  port: number,
): (r: RecordLine) => boolean {
  return (r: RecordLine): boolean =>
    r.protocol === protocol && r.dest_ip === dest && r.dest_port === port;
}

/** Waits until the output holds `count` end records and has settled. */
async function waitEnds(path: string, count: number, timeoutMs = 10_000): Promise<void> {
  const ends = (): number => readRecords(path).filter((r) => r.type === "end").length;
  await waitOutput(path, {
    what: () => `${count} end records in ${path}, got ${ends()}`,
    ready: () => ends() >= count,
    timeoutMs,
  });
}

/** Writes a routes file with one route. */
async function writeRoutes(path: string, network: string, resourceId: string): Promise<void> {
  await Deno.writeTextFile(
    path,
    JSON.stringify({ routes: [{ network, resource_id: resourceId }] }),
  );
}

/** The marked TCP connection (mark 0x1bd10) from A's 10.99.0.1 to 10.99.0.2:9011. */
const marked = to(6, ADDR.bOther4, MARKED_OTHER_PORT);

// ---------------------------------------------------------------------------------------------
// 1. DNS collection policy.

labTest(
  "logger: UDP to the DNS ports 53 and 5353 is not logged by default (counted as " +
    "dns_filtered), UDP to another port and TCP to port 53 are; --dns-collection logs UDP/53",
  async ({ a, dir }): Promise<void> => {
    const plainOut = `${dir}/plain.jsonl`;
    const dnsOut = `${dir}/dns.jsonl`;
    await using plain = await listening(a, plainOut);
    await using dns = await listening(a, dnsOut, ["--dns-collection"]);

    await traffic([], () => [
      peer(a, "udp-burst", ADDR.b4, 53, 1),
      peer(a, "udp-burst", ADDR.b4, 5353, 1),
      peer(a, "udp-burst", ADDR.b4, 9053, 1),
      peer(a, "tcp-connect", ADDR.b4, 53, 1),
    ]);
    await flush(a);
    await waitEnds(plainOut, 2);
    await waitEnds(dnsOut, 4);
    const plainSummary = await stop(plain);
    const dnsSummary = await stop(dns);

    const p = readRecords(plainOut, { complete: true });
    const d = readRecords(dnsOut, { complete: true });
    assertPaired(p, "default");
    assertPaired(d, "--dns-collection");
    const dnsUdp = (r: RecordLine): boolean => to(17, ADDR.b4, 53)(r) || to(17, ADDR.b4, 5353)(r);
    assert.deepEqual(p.filter(dnsUdp), [], "default: no record of UDP to 53 or 5353");
    assert.equal(p.filter(to(17, ADDR.b4, 9053)).length, 2, "default: UDP/9053 logged");
    assert.equal(p.filter(to(6, ADDR.b4, 53)).length, 2, "default: TCP/53 logged");
    assert.equal(p.length, 4, "default: nothing else");
    assert.equal(d.filter(to(17, ADDR.b4, 53)).length, 2, "--dns-collection: UDP/53 logged");
    assert.equal(d.filter(to(17, ADDR.b4, 5353)).length, 2, "--dns-collection: UDP/5353 logged");
    assert.equal(d.length, 8, "--dns-collection: the four flows");
    assert.deepEqual(
      p.map(connection).sort(),
      d.filter((r) => !dnsUdp(r)).map(connection).sort(),
      "both CLIs saw the same non-DNS connections",
    );
    assert.ok(d.every((r) => r.direction === "egress"), "A → B is egress");
    assert.equal(plainSummary.dns_filtered, 4, `dns_filtered: 2 flows × start+end`);
    assert.equal(dnsSummary.dns_filtered, 0, "--dns-collection filters nothing");
    assert.equal(plainSummary.written, 4);
  },
);

// ---------------------------------------------------------------------------------------------
// 2. Resource IDs from --routes, SIGHUP reloads, a bad file at startup.

labTest(
  "logger: --routes gives routed (non-overlay) addresses their resource ID and overlay " +
    "addresses none; SIGHUP reloads (later flows carry the new ID, a broken file keeps the " +
    "previous one and warns, live flows are untouched); a bad file at startup exits 2",
  async ({ a, b, dir }): Promise<void> => {
    const output = `${dir}/out.jsonl`;
    const routes = `${dir}/routes.json`;
    await writeRoutes(routes, "10.99.0.0/24", "lab");

    // A bad file at startup: one line naming --routes and the file, exit 2, no stack trace.
    const bad = `${dir}/bad-routes.json`;
    await writeRoutes(bad, "10.99.0.0/33", "lab");
    const broken = `${dir}/broken-routes.json`;
    await Deno.writeTextFile(broken, "{");
    for (const file of [bad, broken]) {
      const r = await runIn(a, [DENO, "run", "-A", MAIN, "--routes", file, "-o", "-"], {
        cwd: ROOT,
        env: { NO_COLOR: "1" },
      });
      assert.equal(r.code, 2, `${file}: exit code; stderr:\n${r.stderr}`);
      assert.equal(r.stdout, "", `${file}: no records`);
      const lines = r.stderr.trimEnd().split("\n");
      assert.equal(lines.length, 1, `${file}: one line on stderr, got:\n${r.stderr}`);
      assert.match(lines[0]!, /^netbird-ct: invalid --routes: /);
      assert.ok(lines[0]!.includes(file), `${file}: the line names the file: ${lines[0]}`);
      assert.doesNotMatch(r.stderr, /\n\s+at |RoutesError|Uncaught/, "no stack trace");
    }

    await using cli = await listening(a, output, ["--routes", routes]);
    await using server = peer(b, "tcp-server", ADDR.bOther4, MARKED_OTHER_PORT, 3);
    await server.waitFor("ready");
    const connect = async (): Promise<RecordLine> => {
      const known = readRecords(output).filter(marked).length;
      await traffic([], () => [peer(a, "tcp-client", ADDR.bOther4, MARKED_OTHER_PORT, 1000)]);
      let start: RecordLine | undefined;
      await waitUntil("the start of the marked connection", () => {
        start = readRecords(output).filter(marked)[known];
        return start !== undefined;
      });
      assert.equal(start!.type, "start");
      return start!;
    };

    const first = await connect();
    await traffic([], () => [peer(a, "udp-burst", ADDR.b4, 9200, 1)]);
    await waitUntil(
      "the overlay flow's start",
      () => readRecords(output).some(to(17, ADDR.b4, 9200)),
    );
    assert.equal(first.dest_resource_id, "lab", "10.99.0.2 is in the lab route");
    assert.equal(first.source_resource_id, "lab", "so is 10.99.0.1 (every non-overlay address)");
    assert.equal(first.direction, "ingress", `mark ${MARK_IN.toString(16)} = ingress`);

    await writeRoutes(routes, "10.99.0.0/24", "lab2");
    cli.kill("SIGHUP");
    await cli.waitFor("Reloaded", "stderr");
    const second = await connect();
    assert.equal(second.dest_resource_id, "lab2", "after SIGHUP: the reloaded ID");
    assert.equal(second.source_resource_id, "lab2");

    await Deno.writeTextFile(routes, '{"routes": [');
    cli.kill("SIGHUP");
    await cli.waitFor("Cannot reload", "stderr");
    assert.match(cli.stderr, /\[WRN\].*Cannot reload .*keeping the previous routes/);
    const third = await connect();
    assert.equal(third.dest_resource_id, "lab2", "a broken file on SIGHUP keeps the previous");
    assert.equal(third.source_resource_id, "lab2");
    await server.success();

    // Every connection was live across a reload: each still gets its one end.
    await flush(a);
    await waitEnds(output, 4);
    const summary = await stop(cli);
    const records = readRecords(output, { complete: true });
    assertPaired(records, "routes");
    assert.equal(records.length, 8, "three marked connections and the overlay flow");
    const overlay = records.filter(to(17, ADDR.b4, 9200));
    assert.deepEqual(
      overlay.map((r) => [r.source_resource_id, r.dest_resource_id]),
      [[null, null], [null, null]],
      "overlay addresses never get a resource ID",
    );
    // An end is enriched when it is logged: with the table current at the flush.
    for (const r of records.filter((r) => marked(r) && r.type === "end")) {
      assert.deepEqual([r.source_resource_id, r.dest_resource_id], ["lab2", "lab2"]);
    }
    assert.equal(summary.live, 0, "every live flow ended");
    assert.equal(summary.synthesized_starts, 0);
    assert.equal(summary.synthesized_ends, 0);
    assert.equal(summary.written, 8);
  },
);

// ---------------------------------------------------------------------------------------------
// 3. Exit-node policy.

labTest(
  "logger: a flow whose routed end matches only a /0 route is exit-node traffic: not " +
    'logged by default (exit_node_filtered), logged with --exit-node-collection as "exit"',
  async ({ a, b, dir }): Promise<void> => {
    const routes = `${dir}/routes.json`;
    await writeRoutes(routes, "0.0.0.0/0", "exit");
    const plainOut = `${dir}/plain.jsonl`;
    const exitOut = `${dir}/exit.jsonl`;
    await using plain = await listening(a, plainOut, ["--routes", routes]);
    await using exit = await listening(a, exitOut, ["--routes", routes, "--exit-node-collection"]);

    await traffic(
      [peer(b, "tcp-server", ADDR.bOther4, MARKED_OTHER_PORT, 1)],
      () => [
        peer(a, "tcp-client", ADDR.bOther4, MARKED_OTHER_PORT, 1000),
        peer(a, "udp-burst", ADDR.b4, 9201, 1),
      ],
    );
    await flush(a);
    await waitEnds(exitOut, 2);
    await waitEnds(plainOut, 1);
    const plainSummary = await stop(plain);
    const exitSummary = await stop(exit);

    const p = readRecords(plainOut, { complete: true });
    const e = readRecords(exitOut, { complete: true });
    assertPaired(p, "default");
    assertPaired(e, "--exit-node-collection");
    assert.deepEqual(p.filter(marked), [], "default: the exit-node flow is not logged");
    assert.equal(p.filter(to(17, ADDR.b4, 9201)).length, 2, "default: the overlay flow is");
    assert.equal(p.length, 2, "default: nothing else");
    assert.equal(plainSummary.exit_node_filtered, 2, "exit_node_filtered: its start and end");
    const logged = e.filter(marked);
    assert.equal(logged.length, 2, "--exit-node-collection: the exit-node flow is logged");
    for (const r of logged) {
      assert.equal(r.dest_resource_id, "exit", `${r.type}: dest_resource_id`);
      assert.equal(r.source_resource_id, "exit", `${r.type}: 10.99.0.1 matches /0 too`);
    }
    const overlay = e.filter(to(17, ADDR.b4, 9201));
    assert.equal(overlay.length, 2);
    assert.ok(overlay.every((r) => r.dest_resource_id === null && r.source_resource_id === null));
    assert.equal(e.length, 4);
    assert.equal(exitSummary.exit_node_filtered, 0);
  },
);

// ---------------------------------------------------------------------------------------------
// 4. Active timeout: updates, and start + updates + end = the kernel's counters.

labTest(
  "logger: --active-timeout 2s: a ~6 s TCP transfer gets >= 2 update records, then an " +
    "end; start + updates + end equal the kernel's counters at DESTROY, one flow_id",
  async ({ a, b, dir }): Promise<void> => {
    const output = `${dir}/out.jsonl`;
    await using cli = await listening(a, output, ["--counters", "--active-timeout", "2s"]);
    await using events = spawnIn(a, ["conntrack", "-E", "-e", "DESTROY", "-o", "id,extended"]);
    const destroyed = (): KernelEvent[] => parseKernel(events.stdout);
    // conntrack -E prints nothing until an event: end a probe ping (non-overlay, not reported)
    // until the listener shows its DESTROY.
    await waitUntil(
      "conntrack -E to report a probe's DESTROY",
      async () => {
        await ping(a, ADDR.bOther4);
        await runIn(a, ["conntrack", "-D", "-p", "icmp", "-d", ADDR.bOther4]);
        return destroyed().some((e) => e.dest === ADDR.bOther4);
      },
      10_000,
      100,
    );

    const chunks = 26;
    const intervalMs = 250;
    const began = Date.now();
    await traffic(
      [peer(b, "tcp-server", ADDR.b4, 9020, 1)],
      () => [peer(a, "tcp-trickle", ADDR.b4, 9020, chunks, intervalMs)],
    );
    const tookMs = Date.now() - began;
    await flush(a);
    const flow = (r: RecordLine): boolean => to(6, ADDR.b4, 9020)(r);
    await waitUntil(
      () => `the end record and the DESTROY:\n${Deno.readTextFileSync(output)}\n${events.stdout}`,
      () =>
        readRecords(output).some((r) => flow(r) && r.type === "end") &&
        destroyed().some((e) => e.protocol === 6 && e.destPort === 9020),
    );
    const summary = await stop(cli);
    events.kill("SIGTERM");
    await events.wait();

    const kernel = destroyed().filter((e) => e.protocol === 6 && e.destPort === 9020);
    assert.equal(kernel.length, 1, "one kernel DESTROY");
    const k = kernel[0]!;
    assert.ok(k.orig !== undefined && k.reply !== undefined, "kernel counters (acct on)");
    const records = readRecords(output, { complete: true });
    const mine = records.filter((r) => r.conntrack_id === k.id && r.source_port === k.sourcePort);
    assert.deepEqual(records.filter(flow), mine, "every record of the transfer is this flow's");
    const types = mine.map((r) => r.type);
    const updates = mine.filter((r) => r.type === "update");
    assert.ok(tookMs >= (chunks - 1) * intervalMs, `the transfer took ${tookMs} ms`);
    assert.ok(updates.length >= 2, `>= 2 updates in a ${tookMs} ms transfer: ${types}`);
    assert.deepEqual(
      types,
      ["start", ...updates.map(() => "update"), "end"],
      "start, updates, end in this order",
    );
    assert.equal(new Set(mine.map((r) => r.flow_id)).size, 1, "one flow_id");
    assert.ok(mine.every((r) => r.direction === "egress"), "A's own address → B: egress");
    assert.ok(updates[0]!.tx_bytes > 0, "the first update carries bytes sent so far");
    const sum = (key: "rx_packets" | "tx_packets" | "rx_bytes" | "tx_bytes"): number =>
      mine.reduce((total, r) => total + r[key], 0);
    assert.deepEqual(
      { rxPackets: sum("rx_packets"), rxBytes: sum("rx_bytes") },
      { rxPackets: k.reply.packets, rxBytes: k.reply.bytes },
      "egress rx = the kernel's reply counters",
    );
    assert.deepEqual(
      { txPackets: sum("tx_packets"), txBytes: sum("tx_bytes") },
      { txPackets: k.orig.packets, txBytes: k.orig.bytes },
      "egress tx = the kernel's original counters",
    );
    assert.ok(k.orig.bytes > chunks * 1024, "the kernel counted the payload");
    assert.equal(summary.updates, updates.length, "updates= counts them");
  },
);

// ---------------------------------------------------------------------------------------------
// 5. Aggregation windows against per-event records of the same traffic.

/** The aggregation key of a record. */
function aggregationKey(r: RecordLine): string {
  return [r.source_ip, r.dest_ip, r.dest_port, r.direction, r.protocol, r.icmp_type].join(" ");
}

/** Sums per aggregation key. */
interface KeyTotals {
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
  starts: number;
  ends: number;
}

/** Counters and start/end counts summed per aggregation key; `count` gives a record's counts. */
function totals(records: RecordLine[], count: (r: RecordLine) => [number, number]): Map<
  string,
  KeyTotals
> {
  const out = new Map<string, KeyTotals>();
  for (const r of records) {
    const k = aggregationKey(r);
    const t = out.get(k) ??
      { rxPackets: 0, txPackets: 0, rxBytes: 0, txBytes: 0, starts: 0, ends: 0 };
    const [starts, ends] = count(r);
    out.set(k, {
      rxPackets: t.rxPackets + r.rx_packets,
      txPackets: t.txPackets + r.tx_packets,
      rxBytes: t.rxBytes + r.rx_bytes,
      txBytes: t.txBytes + r.tx_bytes,
      starts: t.starts + starts,
      ends: t.ends + ends,
    });
  }
  return out;
}

labTest(
  "logger: --window 2s aggregates per key: window records sum to the per-event records " +
    "of a second CLI on the same traffic (counters, starts, ends), keep the first event's flow",
  async ({ a, b, dir }): Promise<void> => {
    const rawOut = `${dir}/raw.jsonl`;
    const winOut = `${dir}/win.jsonl`;
    await using raw = await listening(a, rawOut, ["--counters"]);
    await using win = await listening(a, winOut, ["--counters", "--window", "2s"]);

    await traffic(
      [peer(b, "tcp-server", ADDR.b4, 9105, 1), peer(b, "udp-server", ADDR.b4, 9106, 1)],
      () => [
        peer(a, "udp-flows", ADDR.b4, 9100, 3),
        peer(a, "udp-flows", ADDR.b4, 9101, 2),
        peer(a, "udp-flows", ADDR.b6, 9100, 2),
        peer(a, "udp-burst", ADDR.b4, 9102, 3),
        peer(a, "tcp-client", ADDR.b4, 9105, 1500),
        peer(a, "udp-client", ADDR.b4, 9106, 300),
      ],
    );
    await ping(a, ADDR.b4);
    await ping(a, ADDR.b6);
    // The first window closes (its timer, 2 s after startup): what follows lands in later
    // windows. Right after it: new keys (in one window, well before the next boundary) and more
    // flows of an old key; the flush ends everything in that window.
    await waitUntil("the first window record", () => readRecords(winOut).length > 0, 5_000);
    await traffic([], () => [
      peer(a, "udp-flows", ADDR.b4, 9107, 2),
      peer(a, "udp-flows", ADDR.b6, 9107, 1),
      peer(a, "udp-flows", ADDR.b4, 9100, 2),
    ]);
    await flush(a);
    const flows = 3 + 2 + 2 + 3 + 1 + 1 + 2 + 2 + 1 + 2;
    await waitEnds(rawOut, flows);
    const rawSummary = await stop(raw);
    const winSummary = await stop(win);

    const r = readRecords(rawOut, { complete: true });
    const w = readRecords(winOut, { complete: true });
    assertPaired(r, "raw");
    assert.equal(r.length, 2 * flows, "raw: one start and one end per flow");
    for (const s of [rawSummary, winSummary]) {
      assert.equal(s.overruns, 0, "no overrun: both CLIs saw every event, in the same order");
      assert.equal(s.synthesized_starts! + s.synthesized_ends!, 0, "none synthesized");
    }
    assert.ok(w.length > 0, "window records written (the last window at shutdown)");
    for (const x of w) {
      assert.equal(x.type, "window", `${aggregationKey(x)}: type`);
      assert.ok(x.window_start! < x.window_end!, `${aggregationKey(x)}: window_start < end`);
      assert.ok(
        x.window_start! <= x.timestamp && x.timestamp <= x.window_end!,
        `${aggregationKey(x)}: its timestamp ${x.timestamp} lies in its window`,
      );
      assert.equal(x.num_of_drops, 0);
      assert.equal(x.num_of_updates, 0);
      assert.equal(x.reason, undefined);
    }
    const rawTotals = totals(r, (x) => [x.type === "start" ? 1 : 0, x.type === "end" ? 1 : 0]);
    const winTotals = totals(w, (x) => [x.num_of_starts!, x.num_of_ends!]);
    assert.deepEqual(
      winTotals,
      rawTotals,
      "per key: counters, starts and ends of the windows = the raw records'",
    );
    assert.ok(rawTotals.size < flows, "some keys merged several flows");
    assert.ok(w.length > winTotals.size, "some keys sit in several windows");
    assert.ok(winSummary.windows! >= 2, "several windows");
    assert.equal(winSummary.aggregates, w.length, "aggregates= counts the window records");

    // A key that sits in one window: its record is the key's first event (same kernel event in
    // both CLIs, so the same flow_id, conntrack_id and source port). event_id is a fresh random
    // UUIDv4 per record and process, so the two CLIs cannot share it.
    const windowsPerKey = new Map<string, number>();
    for (const x of w) {
      windowsPerKey.set(aggregationKey(x), (windowsPerKey.get(aggregationKey(x)) ?? 0) + 1);
    }
    let single = 0;
    for (const x of w) {
      const k = aggregationKey(x);
      if (windowsPerKey.get(k) !== 1) continue;
      single++;
      const first = r.find((y) => aggregationKey(y) === k)!;
      assert.deepEqual(
        [x.flow_id, x.conntrack_id, x.source_port, x.icmp_code],
        [first.flow_id, first.conntrack_id, first.source_port, first.icmp_code],
        `${k}: the window record is the key's earliest event`,
      );
    }
    assert.ok(single > 0, "at least one key in a single window");
    assert.equal(new Set(w.map((x) => x.event_id)).size, w.length, "unique event_id");
  },
);
