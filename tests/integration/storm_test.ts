/**
 * Real-kernel storm tests: netbird-ct against bursts of thousands of UDP flows (one datagram per
 * destination port, from `_peer.ts udp-burst`) and a table flush, in a throwaway pair of network
 * namespaces. The kernel's own count of created flows is the nft `ct state new` counters of A,
 * cross-checked with a `conntrack -L` dump. Root only.
 *
 * A connection is identified by its conntrack id AND its tuple (source and destination port; all
 * burst flows are UDP 100.64.0.1 → 100.64.0.2): the kernel's ids are 32-bit hashes
 * (`nf_ct_get_id`), so two open entries share an id, and with it a flow_id, with probability
 * ≈ n²/2³³ (20000 flows: ~4.5 %; 60000: ~35 %, measured: a collision in 4 of 6 runs).
 *
 * The live-flow table keys connections by id plus original tuple (it once used the id alone, which
 * produced spurious synthesized records whenever the kernel handed out a colliding id); the last
 * test storms until the kernel does so and checks both connections.
 *
 * Run: `deno task test:kernel`, or `deno test --allow-all tests/integration/storm_test.ts`.
 */

import assert from "node:assert/strict";
import { ADDR, checkIn, createNetnsPair } from "./_netns.ts";
import {
  flush,
  ignore,
  interrupt,
  lineCount,
  parseSummary,
  peer,
  readRecords,
  READY,
  startCli,
  type Summary,
  waitOutput,
} from "./_cli.ts";

// ---------------------------------------------------------------------------------------------
// Constants.

/** The kernel's default receive buffer: ~330 queued events once the kernel doubles it. */
const SMALL_RCVBUF = "212992";
/**
 * The burst's destination ports are `BASE_PORT .. BASE_PORT + ports - 1`: above NetBird's DNS
 * ports (53, 5353, 22054), whose UDP flows the flow logger does not log by default.
 */
const BASE_PORT = 30000;

// ---------------------------------------------------------------------------------------------
// Helpers.

/** The fields of an output record these tests look at (snake_case, as written). */
interface StormRecord {
  "flow_id": string;
  type: "start" | "end";
  direction: string;
  "source_port": number;
  "dest_port": number;
  "conntrack_id": number;
  reason?: string;
}

/** One entry of a `conntrack -L -o id` dump (original tuple). */
interface TableEntry {
  id: number;
  sourcePort: number;
  destPort: number;
}

/** What one storm run observed. */
interface Storm {
  /** CLI exit code. */
  code: number;
  /** CLI stderr. */
  stderr: string;
  /** The output file, parsed. */
  records: StormRecord[];
  /** The exit summary. */
  summary: Summary;
  /** Flows the kernel created (nft `ct state new` counters of A, output + input). */
  created: number;
  /** `conntrack -L` in A once every flow exists (before the flush, if any). */
  tableBefore: TableEntry[];
  /** `conntrack -L` in A after the CLI exited. */
  tableAfter: TableEntry[];
  /** Entries of `tableBefore` whose conntrack id another entry also has. */
  collidingIds: number;
  /** Fresh runs it took (see the module doc). */
  runs: number;
}

/** Options of {@linkcode storm}. */
interface StormOptions {
  /** Destination ports per sender: flows = ports × senders. */
  ports: number;
  /** Sockets that send the burst one after the other, to the same ports (default 1). */
  senders?: number;
  /** CLI flags besides `-n/-a/--stats-interval 0/-o`. */
  flags: string[];
  /**
   * `true`: flush after the burst, wait for the output to reach `expectLines` or stop growing,
   * then SIGINT. `false`: SIGINT right after the burst (flows still open).
   */
  flush: boolean;
  /** Output lines that end the wait early (when known). */
  expectLines?: number;
  /**
   * Stop the CLI (SIGSTOP) while the first half of the burst is sent (one sender only), so that
   * NEW events are lost for certain instead of only when the burst happens to outrun the CLI.
   */
  pauseFirstHalf?: boolean;
}

/** Parses `conntrack -L -o id` output: the original tuple's ports and the conntrack id. */
function parseTable(text: string): TableEntry[] {
  const entries: TableEntry[] = [];
  for (const line of text.split("\n")) {
    const id = /\bid=(\d+)\s*$/.exec(line);
    const ports = /\bsport=(\d+) dport=(\d+)/.exec(line); // the first pair: original tuple
    if (id !== null && ports !== null) {
      entries.push({ id: Number(id[1]), sourcePort: Number(ports[1]), destPort: Number(ports[2]) });
    }
  }
  return entries;
}

async function table(ns: string): Promise<TableEntry[]> {
  return parseTable(await checkIn(ns, ["conntrack", "-L", "-o", "id"]));
}

/** Sums the `packets N` of the `ct state new counter` rules of A (output and input chains). */
async function createdFlows(ns: string): Promise<number> {
  const text = await checkIn(ns, ["nft", "list", "table", "inet", "nbct"]);
  const counters = [...text.matchAll(/ct state new counter packets (\d+)/g)];
  assert.equal(counters.length, 2, `two ct state new counters in:\n${text}`);
  return counters.reduce((sum, m) => sum + Number(m[1]), 0);
}

/** Waits until `path` has `want` lines (when given) or has not grown for `quietMs`. */
async function waitLines(
  path: string,
  want: number | undefined,
  quietMs: number,
  timeoutMs = 15_000,
): Promise<void> {
  await waitOutput(path, {
    what: () => `${path} to reach ${want} lines or settle (at ${lineCount(path)})`,
    done: () => want !== undefined && lineCount(path) >= want,
    quietMs,
    timeoutMs,
    intervalMs: 50,
  });
}

/** Sends one datagram from A to B's ports `port .. port + count - 1` (one flow each). */
async function burst(ns: string, port: number, count: number): Promise<void> {
  await using sender = peer(ns, "udp-burst", ADDR.b4, port, count);
  await sender.success();
}

/** How many entries share their conntrack id with another entry. */
function collisions(entries: TableEntry[]): number {
  const seen = new Map<number, number>();
  for (const e of entries) seen.set(e.id, (seen.get(e.id) ?? 0) + 1);
  return [...seen.values()].filter((n) => n > 1).reduce((sum, n) => sum + n, 0);
}

/**
 * In a fresh namespace pair: starts the CLI in A, bursts UDP flows A→B, optionally flushes, stops
 * the CLI with SIGINT and collects everything the assertions need.
 */
async function storm(o: StormOptions): Promise<Storm> {
  await using ns = await createNetnsPair();
  const { a } = ns;
  const dir = await Deno.makeTempDir({ prefix: "nbct-storm-" });
  try {
    const output = `${dir}/out.jsonl`;
    await using cli = startCli(a, output, ["--stats-interval", "0", ...o.flags], [
      "-n",
      "100.64.0.0/16",
      "-a",
      ADDR.a4,
    ]);
    await cli.waitFor(READY, "stderr", 15_000);
    const pause = o.pauseFirstHalf ?? false;
    const half = pause ? Math.floor(o.ports / 2) : o.ports;
    if (pause) cli.kill("SIGSTOP");
    try {
      await burst(a, BASE_PORT, half);
    } finally {
      if (pause) cli.kill("SIGCONT");
    }
    if (half < o.ports) await burst(a, BASE_PORT + half, o.ports - half);
    for (let i = 1; i < (o.senders ?? 1); i++) await burst(a, BASE_PORT, o.ports);
    const created = await createdFlows(a);
    let tableBefore: TableEntry[] = [];
    if (o.flush) {
      tableBefore = await table(a);
      await flush(a);
      await waitLines(output, o.expectLines, o.expectLines === undefined ? 500 : 1_000);
    }
    const code = await interrupt(cli, 20_000);
    const tableAfter = await table(a);
    if (!o.flush) tableBefore = tableAfter;
    return {
      code,
      stderr: cli.stderr,
      records: readRecords<StormRecord>(output, { complete: true }),
      summary: parseSummary(cli.stderr),
      created,
      tableBefore,
      tableAfter,
      collidingIds: collisions(tableBefore),
      runs: 1,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** {@linkcode storm}, once: colliding conntrack ids need no special handling. */
async function stormOnce(o: StormOptions): Promise<Storm> {
  return { ...(await storm(o)), runs: 1 };
}

/** A connection: conntrack id and original tuple (all burst flows are UDP A→B). */
function key(id: number, sourcePort: number, destPort: number): string {
  return `${id}:${sourcePort}>${destPort}`;
}
function recordKey(r: StormRecord): string {
  return key(r.conntrack_id, r.source_port, r.dest_port);
}
function entryKey(e: TableEntry): string {
  return key(e.id, e.sourcePort, e.destPort);
}

/** Start and end records per connection. */
function byConnection(
  records: StormRecord[],
): Map<string, { starts: StormRecord[]; ends: StormRecord[] }> {
  const flows = new Map<string, { starts: StormRecord[]; ends: StormRecord[] }>();
  for (const r of records) {
    let f = flows.get(recordKey(r));
    if (f === undefined) flows.set(recordKey(r), f = { starts: [], ends: [] });
    (r.type === "start" ? f.starts : f.ends).push(r);
  }
  return flows;
}

/**
 * Connections whose records are not exactly one start and one end with one flow_id (at most 10,
 * for messages).
 */
function unpaired(records: StormRecord[]): string[] {
  return [...byConnection(records)]
    .filter(([, f]) =>
      f.starts.length !== 1 || f.ends.length !== 1 || f.starts[0]!.flow_id !== f.ends[0]!.flow_id
    )
    .slice(0, 10)
    .map(([k, f]) =>
      `${k}: ${f.starts.length} starts, ${f.ends.length} ends, flow_ids ${[
        ...new Set([...f.starts, ...f.ends].map((r) => r.flow_id)),
      ]}`
    );
}

/** The destination ports of `senders` bursts, sorted. */
function burstPorts(ports: number, senders = 1): number[] {
  return Array.from({ length: ports * senders }, (_, i) => BASE_PORT + Math.floor(i / senders));
}

function sortedPorts(records: StormRecord[]): number[] {
  return records.map((r) => r.dest_port).sort((x, y) => x - y);
}

function describe(s: Storm): string {
  return `runs: ${s.runs}, summary: ${JSON.stringify(s.summary)}\nstderr:\n${s.stderr}`;
}

/** Checks common to every run: clean exit, the kernel created exactly the burst, no failures. */
function assertRun(s: Storm, ports: number, senders = 1): void {
  assert.equal(s.code, 0, `exit code after SIGINT; ${describe(s)}`);
  assert.equal(s.created, ports * senders, "nft: the kernel created one flow per datagram");
  assert.deepEqual(
    s.tableBefore.map((e) => e.destPort).sort((x, y) => x - y),
    burstPorts(ports, senders),
    "conntrack -L: one entry per burst datagram",
  );
  assert.equal(s.summary.resync_failures, 0, `no failed resync; ${describe(s)}`);
  assert.equal(s.summary.reopens, 0, `no reopen; ${describe(s)}`);
  assert.equal(s.summary.written, s.records.length, "written= counts the output lines");
  assert.ok(s.records.every((r) => r.direction === "egress"), "every burst flow is egress");
}

// ---------------------------------------------------------------------------------------------
// 1. Default buffer: nothing lost.

Deno.test({
  name: "storm: large buffer: a burst of 20000 UDP flows then a flush loses nothing",
  ignore,
  async fn(): Promise<void> {
    const flows = 20_000;
    const s = await stormOnce({
      ports: flows,
      flags: [],
      flush: true,
      expectLines: 2 * flows,
    });
    assertRun(s, flows);
    const nKernel = s.created;
    const starts = s.records.filter((r) => r.type === "start");
    const ends = s.records.filter((r) => r.type === "end");
    assert.equal(starts.length, nKernel, `one start per kernel flow; ${describe(s)}`);
    assert.equal(ends.length, nKernel, `one end per kernel flow; ${describe(s)}`);
    assert.deepEqual(s.records.filter((r) => "reason" in r).slice(0, 10), [], "none synthesized");
    assert.deepEqual(unpaired(s.records), [], "each flow: one start, one end, one flow_id");
    assert.deepEqual(
      starts.map(recordKey).sort(),
      s.tableBefore.map(entryKey).sort(),
      "the starts are the kernel's entries (ids and tuples)",
    );
    assert.equal(s.summary.overruns, 0, `no overrun; ${describe(s)}`);
    assert.equal(s.summary.kernel_drops, 0, `no kernel drop; ${describe(s)}`);
    assert.equal(s.summary.events, 2 * nKernel, "events= is every NEW and DESTROY");
    assert.equal(s.summary.live, 0);
    assert.deepEqual(s.tableAfter, [], "the kernel table is empty after the flush");
  },
});

// ---------------------------------------------------------------------------------------------
// 2. Small buffer, DESTROY may be dropped: exact loss accounting, resync repairs the table.

Deno.test({
  name: "storm: small buffer without reliable DESTROY: loss is counted exactly and resync " +
    "repairs the table",
  ignore,
  async fn(): Promise<void> {
    const flows = 8_000;
    const s = await stormOnce({
      ports: flows,
      flags: ["--rcvbuf", SMALL_RCVBUF, "--no-reliable-destroy"],
      flush: true,
    });
    assertRun(s, flows);
    const nKernel = s.created;
    const sum = s.summary;
    assert.ok(sum.overruns! > 0, `the storm overran the buffer; ${describe(s)}`);
    assert.ok(sum.kernel_drops! > 0, `the kernel dropped events; ${describe(s)}`);
    assert.equal(
      sum.events! + sum.kernel_drops!,
      2 * nKernel,
      `every NEW and DESTROY was received or counted as dropped; ${describe(s)}`,
    );
    assert.ok(sum.resyncs! >= 1, `resynced; ${describe(s)}`);
    assert.equal(sum.live, 0, "no flow left open after the final resync");
    assert.deepEqual(s.tableAfter, [], "and the kernel table is empty too");

    const starts = s.records.filter((r) => r.type === "start");
    const ends = s.records.filter((r) => r.type === "end");
    assert.equal(starts.length, ends.length, "as many starts as ends");
    assert.deepEqual(unpaired(s.records), [], "each flow: one start, one end, one flow_id");
    assert.ok(byConnection(s.records).size <= nKernel, "no more flows than the kernel created");
    const reasons = new Set(s.records.flatMap((r) => r.reason === undefined ? [] : [r.reason]));
    assert.ok([...reasons].every((r) => r === "resync"), `reasons: ${[...reasons]}`);
    const synthStarts = starts.filter((r) => r.reason !== undefined).length;
    const synthEnds = ends.filter((r) => r.reason !== undefined).length;
    assert.equal(synthStarts, sum.synthesized_starts, "synthesized_starts= counts them");
    assert.equal(synthEnds, sum.synthesized_ends, "synthesized_ends= counts them");
    assert.ok(synthEnds > 0, `lost DESTROYs were synthesized; ${describe(s)}`);
    // Real records are real events: NEWs (less the duplicates of synthesized starts) + DESTROYs.
    assert.equal(
      s.records.length - synthStarts - synthEnds + sum.duplicates!,
      sum.events,
      "every received event is a real record or a duplicate NEW",
    );
  },
});

// ---------------------------------------------------------------------------------------------
// 3. Small buffer, reliable DESTROY (default): every end is real, lost NEWs are synthesized.
//    The CLI is stopped during the first half of the burst, so NEWs are lost for certain; the
//    flush then overruns the buffer with DESTROYs, which the kernel re-delivers.

Deno.test({
  name: "storm: small buffer with reliable DESTROY: every DESTROY arrives and lost NEWs are " +
    "synthesized",
  ignore,
  async fn(): Promise<void> {
    const flows = 8_000;
    const s = await stormOnce({
      ports: flows,
      flags: ["--rcvbuf", SMALL_RCVBUF],
      flush: true,
      expectLines: 2 * flows,
      pauseFirstHalf: true,
    });
    assertRun(s, flows);
    const nKernel = s.created;
    const sum = s.summary;
    assert.ok(sum.overruns! > 0, `the storm overran the buffer; ${describe(s)}`);
    const starts = s.records.filter((r) => r.type === "start");
    const ends = s.records.filter((r) => r.type === "end");
    const realEnds = ends.filter((r) => r.reason === undefined);
    assert.equal(realEnds.length, nKernel, `every DESTROY arrived; ${describe(s)}`);
    assert.equal(ends.length, nKernel, "no synthesized end");
    assert.equal(starts.length, nKernel, `one start per flow, real or synthesized; ${describe(s)}`);
    assert.deepEqual(unpaired(s.records), [], "each flow: one start, one end, one flow_id");
    assert.deepEqual(sortedPorts(realEnds), burstPorts(flows), "ends cover the burst");
    const synthStarts = starts.filter((r) => r.reason !== undefined);
    assert.ok(synthStarts.every((r) => r.reason === "resync"), "synthesized starts: resync");
    assert.equal(synthStarts.length, sum.synthesized_starts, "synthesized_starts= counts them");
    assert.ok(synthStarts.length > 0, `lost NEWs were synthesized; ${describe(s)}`);
    assert.equal(sum.synthesized_ends, 0);
    assert.equal(sum.live, 0);
    assert.deepEqual(s.tableAfter, [], "the kernel table is empty after the flush");
  },
});

// ---------------------------------------------------------------------------------------------
// 4. Interrupted mid-storm with the flows still open: the final resync matches the kernel.
//    The CLI is stopped during the first half of the burst (a natural burst outruns it only
//    ~85 % of the time here), resumes while the second half is sent (overrun, resync while NEWs
//    still arrive), and gets SIGINT as soon as the burst is done. No flush: nothing ends.

Deno.test({
  name: "storm: SIGINT right after a burst (small buffer, no reliable DESTROY, flows still open) " +
    "leaves exactly the kernel's open flows started and not ended",
  ignore,
  async fn(): Promise<void> {
    const flows = 8_000;
    const s = await stormOnce({
      ports: flows,
      flags: ["--rcvbuf", SMALL_RCVBUF, "--no-reliable-destroy"],
      flush: false,
      pauseFirstHalf: true,
    });
    assertRun(s, flows);
    const open = [...byConnection(s.records)]
      .filter(([, f]) => f.starts.length === 1 && f.ends.length === 0)
      .map(([k]) => k)
      .sort();
    const kernel = s.tableAfter.map(entryKey).sort();
    assert.equal(open.length, kernel.length, `open flows = kernel entries; ${describe(s)}`);
    assert.deepEqual(open, kernel, "the same conntrack ids and tuples");
    assert.equal(s.summary.live, kernel.length, "live= is the kernel's table");
    assert.equal(s.records.length, kernel.length, "nothing else: one start per open flow");
    assert.ok(s.summary.overruns! > 0, `the burst overran the buffer; ${describe(s)}`);
    assert.ok(s.summary.resyncs! >= 1, `resynced; ${describe(s)}`);
    const synthStarts = s.records.filter((r) => r.reason !== undefined);
    assert.ok(synthStarts.length > 0, `lost NEWs were synthesized; ${describe(s)}`);
    assert.ok(synthStarts.every((r) => r.reason === "resync"), "synthesized starts: resync");
    assert.equal(
      s.summary.events! + s.summary.kernel_drops!,
      s.created,
      `every NEW was received or counted as dropped; ${describe(s)}`,
    );
  },
});

// ---------------------------------------------------------------------------------------------
// 5. Two open connections with the same conntrack id (regression test: the live-flow table once
//    keyed flows by id alone; observed on 6.18: a spurious synthesized start without any loss,
//    and after a resync a synthesized end for a connection that was still open).
//    3 × 35000 flows give the kernel a colliding id in most runs; up to 6 runs, ~5 s each.

Deno.test({
  name: "storm: two open flows that the kernel gave the same conntrack id each get exactly one " +
    "start and one end",
  ignore,
  async fn(): Promise<void> {
    const ports = 35_000;
    const senders = 3;
    let s: Storm | undefined;
    for (let run = 1; run <= 6 && s === undefined; run++) {
      const attempt = await storm({
        ports,
        senders,
        flags: [],
        flush: true,
        expectLines: 2 * ports * senders,
      });
      if (attempt.collidingIds > 0) s = { ...attempt, runs: run };
    }
    assert.ok(s !== undefined, "the kernel gave two open flows one id in one of 6 runs");
    assertRun(s, ports, senders);
    const ids = new Map<number, number>();
    for (const e of s.tableBefore) ids.set(e.id, (ids.get(e.id) ?? 0) + 1);
    const colliding = new Set(s.tableBefore.filter((e) => ids.get(e.id)! > 1).map(entryKey));
    const mine = s.records.filter((r) => colliding.has(recordKey(r)));
    assert.deepEqual(unpaired(mine), [], `colliding flows: ${[...colliding]}; ${describe(s)}`);
    assert.deepEqual(mine.filter((r) => "reason" in r), [], "none synthesized");
    assert.equal(mine.length, 2 * colliding.size);
    assert.equal(s.records.length, 2 * s.created, "one start and one end per flow");
  },
});
