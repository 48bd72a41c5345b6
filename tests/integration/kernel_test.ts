/**
 * Real-kernel integration tests: netbird-ct against live conntrack in a throwaway pair of network
 * namespaces, with `conntrack -E` / `conntrack -L` as the kernel's own view. Root only.
 *
 * Run: `deno task test:kernel` (= `deno test --allow-all tests/integration`).
 */

import assert from "node:assert/strict";
import { openEventSource, openLibrary } from "../../ffi/mod.ts";
import {
  ConntrackTracker,
  FlowIdGenerator,
  flowNamespace,
  type FlowRecord,
  Overlay,
} from "../../lib/mod.ts";
import {
  ADDR,
  check,
  checkIn,
  createNetnsPair,
  MARK_IN,
  MARKED_OTHER_PORT,
  MARKED_PORT,
  type NetnsPair,
  type Proc,
  runIn,
  spawnIn,
  waitUntil,
} from "./_netns.ts";
import {
  DENO,
  fileSize,
  flush,
  ignore,
  interrupt,
  type KernelEvent,
  MAIN,
  parseKernel,
  peer,
  ping,
  readRecords,
  READY,
  ROOT,
  startCli,
  waitOutput,
} from "./_cli.ts";

const ACCT = "/proc/sys/net/netfilter/nf_conntrack_acct";

async function readAcct(ns: string): Promise<string> {
  return (await checkIn(ns, ["cat", ACCT])).trim();
}

// ---------------------------------------------------------------------------------------------
// a. End-to-end CLI run against the kernel's view.

/** One connection the test makes, how to find it in the kernel's view, what must be reported. */
interface Expected {
  name: string;
  match: (e: KernelEvent) => boolean;
  /** The reported direction, or `undefined` when the flow must not be reported at all. */
  direction: "ingress" | "egress" | undefined;
}

function tuple(
  protocol: number,
  source: string,
  dest: string,
  destPort: number,
): (e: KernelEvent) => boolean {
  return (e: KernelEvent): boolean =>
    e.protocol === protocol && e.source === source && e.dest === dest && e.destPort === destPort;
}
function echo(
  protocol: number,
  source: string,
  dest: string,
  icmpType: number,
): (e: KernelEvent) => boolean {
  return (e: KernelEvent): boolean =>
    e.protocol === protocol && e.source === source && e.dest === dest && e.icmpType === icmpType;
}

const EXPECTED: Expected[] = [
  { name: "ping v4 A→B", match: echo(1, ADDR.a4, ADDR.b4, 8), direction: "egress" },
  { name: "ping v6 A→B", match: echo(58, ADDR.a6, ADDR.b6, 128), direction: "egress" },
  { name: "TCP v4 A→B", match: tuple(6, ADDR.a4, ADDR.b4, 9001), direction: "egress" },
  { name: "TCP v6 A→B", match: tuple(6, ADDR.a6, ADDR.b6, 9002), direction: "egress" },
  { name: "TCP v4 B→A", match: tuple(6, ADDR.b4, ADDR.a4, 9003), direction: "ingress" },
  { name: "UDP v4 A→B", match: tuple(17, ADDR.a4, ADDR.b4, 9004), direction: "egress" },
  { name: "UDP v6 A→B", match: tuple(17, ADDR.a6, ADDR.b6, 9005), direction: "egress" },
  { name: "UDP v4 B→A", match: tuple(17, ADDR.b4, ADDR.a4, 9006), direction: "ingress" },
  {
    name: "TCP v4 A→B marked 0x1bd10",
    match: tuple(6, ADDR.a4, ADDR.b4, MARKED_PORT),
    direction: "ingress",
  },
  {
    name: "TCP 10.99 A→B marked 0x1bd10",
    match: tuple(6, ADDR.aOther4, ADDR.bOther4, MARKED_OTHER_PORT),
    direction: "ingress",
  },
  {
    name: "ping 10.99 (unmarked)",
    match: echo(1, ADDR.aOther4, ADDR.bOther4, 8),
    direction: undefined,
  },
  {
    name: "TCP 10.99 (unmarked)",
    match: tuple(6, ADDR.aOther4, ADDR.bOther4, 9012),
    direction: undefined,
  },
  {
    name: "UDP fd99:: (unmarked)",
    match: tuple(17, ADDR.aOther6, ADDR.bOther6, 9013),
    direction: undefined,
  },
];

/** How many of {@linkcode EXPECTED} must be reported. */
const REPORTED = EXPECTED.filter((x) => x.direction !== undefined).length;

/** Servers first (wait for "ready"), then clients, then pings; every process awaited. */
async function generateTraffic(ns: NetnsPair): Promise<void> {
  const { a, b } = ns;
  const servers = [
    peer(b, "tcp-server", ADDR.b4, 9001, 1),
    peer(b, "tcp-server", ADDR.b6, 9002, 1),
    peer(a, "tcp-server", ADDR.a4, 9003, 1),
    peer(b, "udp-server", ADDR.b4, 9004, 1),
    peer(b, "udp-server", ADDR.b6, 9005, 1),
    peer(a, "udp-server", ADDR.a4, 9006, 1),
    peer(b, "tcp-server", ADDR.b4, MARKED_PORT, 1),
    peer(b, "tcp-server", ADDR.bOther4, MARKED_OTHER_PORT, 1),
    peer(b, "tcp-server", ADDR.bOther4, 9012, 1),
    peer(b, "udp-server", ADDR.bOther6, 9013, 1),
  ];
  const clients: Proc[] = [];
  try {
    await Promise.all(servers.map((s) => s.waitFor("ready")));
    clients.push(
      peer(a, "tcp-client", ADDR.b4, 9001, 1000),
      peer(a, "tcp-client", ADDR.b6, 9002, 2000),
      peer(b, "tcp-client", ADDR.a4, 9003, 3000),
      peer(a, "udp-client", ADDR.b4, 9004, 100),
      peer(a, "udp-client", ADDR.b6, 9005, 200),
      peer(b, "udp-client", ADDR.a4, 9006, 300),
      peer(a, "tcp-client", ADDR.b4, MARKED_PORT, 4000),
      peer(a, "tcp-client", ADDR.bOther4, MARKED_OTHER_PORT, 5000),
      peer(a, "tcp-client", ADDR.bOther4, 9012, 6000),
      peer(a, "udp-client", ADDR.bOther6, 9013, 400),
    );
    await Promise.all([...clients, ...servers].map((p) => p.success()));
    await ping(a, ADDR.b4);
    await ping(a, ADDR.b6);
  } finally {
    for (const p of [...clients, ...servers]) await p[Symbol.asyncDispose]();
  }
}

Deno.test({
  name: "CLI in a netns reports each overlay connection once as start+end matching conntrack -E " +
    "(ids, tuples, directions incl. marks, counters), skips non-overlay flows, exits 0 on " +
    "SIGINT and restores nf_conntrack_acct",
  ignore,
  async fn(): Promise<void> {
    await using ns = await createNetnsPair();
    const { a } = ns;
    const dir = await Deno.makeTempDir({ prefix: "nbct-it-" });
    try {
      const output = `${dir}/out.jsonl`;
      const acctBefore = await readAcct(a);
      await using events = spawnIn(a, [
        "conntrack",
        "-E",
        "-e",
        "NEW,DESTROY",
        "-o",
        "id,extended",
      ]);
      await using cli = startCli(a, output, ["--counters"]);
      await cli.waitFor(READY, "stderr");
      assert.equal(await readAcct(a), "1", "--counters enables nf_conntrack_acct in the netns");

      // conntrack -E prints nothing until an event: ping (unmarked, non-overlay) until it shows one.
      await waitUntil(
        "conntrack -E to report a probe ping",
        async () => {
          await ping(a, ADDR.bOther4);
          return parseKernel(events.stdout).some((e) => e.dest === ADDR.bOther4);
        },
        10_000,
        100,
      );

      await generateTraffic(ns);
      await flush(a);

      const kernel = (): KernelEvent[] => parseKernel(events.stdout);
      const news = (): KernelEvent[] => kernel().filter((e) => e.type === "NEW");
      const destroyed = (): Set<number> =>
        new Set(kernel().filter((e) => e.type === "DESTROY").map((e) => e.id));
      const relevantIds = (): number[] =>
        EXPECTED.filter((x) => x.direction !== undefined)
          .flatMap((x) => news().filter(x.match).map((e) => e.id));
      await waitOutput(output, {
        what: () =>
          `every NEW to be DESTROYed and reported\nkernel:\n${events.stdout}\nfile:\n${
            fileSize(output) > 0 ? Deno.readTextFileSync(output) : ""
          }`,
        ready: () => {
          const gone = destroyed();
          if (!news().every((e) => gone.has(e.id))) return false;
          const ends = readRecords(output).filter((r) => r.type === "end");
          const ids = new Set(ends.map((r) => r.conntrack_id));
          const want = relevantIds();
          return want.length === REPORTED && want.every((id) => ids.has(id));
        },
      });

      assert.equal(await interrupt(cli), 0, `exit code after SIGINT; stderr:\n${cli.stderr}`);
      assert.equal(await readAcct(a), acctBefore, "nf_conntrack_acct restored after exit");

      const records = readRecords(output);
      const all = kernel();
      const reported = new Set<number>();
      for (const x of EXPECTED) {
        const matches = all.filter((e) => e.type === "NEW" && x.match(e));
        if (x.direction === undefined) {
          assert.ok(matches.length >= 1, `${x.name}: kernel saw the connection`);
          for (const n of matches) {
            assert.deepEqual(
              records.filter((r) => r.conntrack_id === n.id),
              [],
              `${x.name}: not reported`,
            );
          }
          continue;
        }
        assert.equal(matches.length, 1, `${x.name}: exactly one kernel NEW`);
        const newEv = matches[0]!;
        const destroy = all.find((e) => e.type === "DESTROY" && e.id === newEv.id);
        assert.ok(destroy !== undefined, `${x.name}: kernel DESTROY`);
        const mine = records.filter((r) => r.conntrack_id === newEv.id);
        const start = mine.filter((r) => r.type === "start");
        const end = mine.filter((r) => r.type === "end");
        assert.equal(start.length, 1, `${x.name}: one start record`);
        assert.equal(end.length, 1, `${x.name}: one end record`);
        assert.equal(mine.length, 2, `${x.name}: nothing else with its id`);
        const s = start[0]!;
        const e = end[0]!;
        assert.equal(s.flow_id, e.flow_id, `${x.name}: start and end share flow_id`);
        assert.notEqual(s.event_id, e.event_id, `${x.name}: distinct event ids`);
        reported.add(newEv.id);
        for (const [r, k] of [[s, newEv], [e, destroy]] as const) {
          const what = `${x.name} ${r.type}`;
          assert.equal(r.direction, x.direction, `${what}: direction`);
          assert.equal(r.protocol, k.protocol, `${what}: protocol`);
          assert.equal(r.source_ip, k.source, `${what}: source_ip`);
          assert.equal(r.dest_ip, k.dest, `${what}: dest_ip`);
          assert.equal(r.source_port, k.sourcePort, `${what}: source_port`);
          assert.equal(r.dest_port, k.destPort, `${what}: dest_port`);
          assert.equal(r.icmp_type, k.icmpType, `${what}: icmp_type`);
          assert.equal(r.icmp_code, k.icmpCode, `${what}: icmp_code`);
        }
        if (x.name.includes("marked")) assert.equal(newEv.mark, MARK_IN, `${x.name}: kernel mark`);
        assert.deepEqual(
          [s.rx_packets, s.tx_packets, s.rx_bytes, s.tx_bytes],
          [0, 0, 0, 0],
          `${x.name}: a start has no counters`,
        );
        assert.ok(destroy.orig !== undefined && destroy.reply !== undefined, "kernel counters");
        const [rx, tx] = x.direction === "ingress"
          ? [destroy.orig, destroy.reply]
          : [destroy.reply, destroy.orig];
        assert.deepEqual(
          [e.rx_packets, e.rx_bytes, e.tx_packets, e.tx_bytes],
          [rx.packets, rx.bytes, tx.packets, tx.bytes],
          `${x.name}: end counters are the kernel's, mapped by direction`,
        );
        assert.ok(tx.bytes > 0, `${x.name}: counters are live (acct was on)`);
      }
      assert.equal(reported.size, REPORTED);
      assert.deepEqual(
        records.filter((r) => !reported.has(r.conntrack_id)),
        [],
        "no records besides the expected connections",
      );
      assert.equal(
        new Set(records.map((r) => r.flow_id)).size,
        REPORTED,
        "one flow_id per connection",
      );
      assert.equal(new Set(records.map((r) => r.event_id)).size, records.length, "unique event_id");
      events.kill("SIGTERM");
      await events.wait();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

// ---------------------------------------------------------------------------------------------
// b. SIGINT right after a burst: everything the kernel queued is written before exit.

Deno.test({
  name: "CLI interrupted right after a 200-flow burst and flush writes every start and end the " +
    "kernel had queued (no loss, no overruns)",
  ignore,
  async fn(): Promise<void> {
    await using ns = await createNetnsPair();
    const { a } = ns;
    const dir = await Deno.makeTempDir({ prefix: "nbct-it-" });
    try {
      const output = `${dir}/out.jsonl`;
      const count = 200;
      const base = 20000;
      await using cli = startCli(a, output);
      await cli.waitFor(READY, "stderr");
      await using burst = peer(a, "udp-burst", ADDR.b4, base, count);
      await burst.success();

      // The kernel's table is the oracle: a dump never loses entries (conntrack -E does on bursts).
      const inBurst = (e: KernelEvent): boolean =>
        e.protocol === 17 && e.source === ADDR.a4 && e.dest === ADDR.b4 &&
        e.destPort >= base && e.destPort < base + count;
      const table = parseKernel(await checkIn(a, ["conntrack", "-L", "-o", "id,extended"]))
        .filter(inBurst);
      assert.equal(table.length, count, "kernel table holds one entry per burst flow");

      // A flush queues every DESTROY on the socket before `conntrack -F` returns: interrupt at once.
      await flush(a);
      assert.equal(await interrupt(cli), 0, `exit code after SIGINT; stderr:\n${cli.stderr}`);

      const records = readRecords(output);
      const starts = new Map(
        records.filter((r) => r.type === "start").map((r) => [r.conntrack_id, r]),
      );
      const ends = new Map(records.filter((r) => r.type === "end").map((r) => [r.conntrack_id, r]));
      const missingStart = table.filter((e) => !starts.has(e.id)).map((e) => e.destPort);
      const missingEnd = table.filter((e) => !ends.has(e.id)).map((e) => e.destPort);
      assert.deepEqual(missingStart, [], "every burst flow has its start record");
      assert.deepEqual(missingEnd, [], "every burst flow has its end record");
      for (const e of table) {
        assert.equal(starts.get(e.id)!.flow_id, ends.get(e.id)!.flow_id, "start/end flow_id");
        assert.equal(ends.get(e.id)!.dest_port, e.destPort);
        assert.equal(ends.get(e.id)!.direction, "egress");
      }
      assert.equal(records.length, 2 * count, "exactly one start and one end per flow");
      assert.deepEqual(
        records.filter((r) => "reason" in r),
        [],
        "every record comes from a kernel event (none synthesized)",
      );
      // The final statistics line ("overruns=N"; older builds: "N overruns").
      const overruns = /\boverruns=(\d+)|(\d+) overruns\b/.exec(cli.stderr);
      assert.ok(overruns !== null, `stop statistics logged:\n${cli.stderr}`);
      assert.equal(overruns[1] ?? overruns[2], "0", "no receive-buffer overrun");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

// ---------------------------------------------------------------------------------------------
// c. The FFI source in this process, opened inside the namespace.

Deno.test({
  name: "FFI source opened in a named netns drives ConntrackTracker: ping gives an egress " +
    "start+end with one flow_id; stop() is idempotent and closes source and library",
  ignore,
  async fn(): Promise<void> {
    await using ns = await createNetnsPair();
    const { a } = ns;
    const records: FlowRecord[] = [];
    let library: { readonly closed: boolean } | undefined;
    {
      using lib = openLibrary();
      library = lib;
      using source = openEventSource(lib, { netns: a });
      let dials = 0;
      const flowIds = new FlowIdGenerator(lib.flowNamespace(a));
      // Declared last, disposed first: even a failing assertion stops it before the library closes.
      await using tracker = new ConntrackTracker(
        () => {
          dials++;
          return source;
        },
        { write: (r) => records.push(...r) },
        {
          overlay: new Overlay({ networks: ["100.64.0.0/16"], addresses: [ADDR.a4] }),
          flowIds,
        },
      );
      await tracker.start();
      assert.ok(tracker.started && tracker.hasSource);
      await ping(a, ADDR.b4);
      await flush(a);
      const icmp = (): FlowRecord[] =>
        records.filter((r) => r.protocol === 1 && r.destIp === ADDR.b4);
      await waitUntil(
        () => `start and end of the ping, got ${JSON.stringify(records, (_, v) => String(v))}`,
        () => icmp().some((r) => r.type === "end"),
      );
      await tracker.stop();
      await tracker.stop(); // idempotent
      assert.equal(tracker.started, false);
      assert.equal(tracker.hasSource, false);
      assert.equal(dials, 1, "no reopen");

      const [start, end, ...rest] = icmp();
      assert.deepEqual(rest, []);
      assert.ok(start !== undefined && end !== undefined);
      assert.equal(start.type, "start");
      assert.equal(end.type, "end");
      assert.equal(start.flowId, end.flowId);
      assert.equal(start.conntrackId, end.conntrackId);
      assert.equal(start.direction, "egress");
      assert.equal(end.direction, "egress");
      assert.equal(start.sourceIp, ADDR.a4);
      assert.equal(start.icmpType, 8);
      assert.equal(start.flowId, flowIds.flowId(start.conntrackId));
      // The flow namespace is this boot's and this netns's: derivable from outside with stat().
      const bootId = (await check(["cat", "/proc/sys/kernel/random/boot_id"])).trim();
      const inode = Deno.statSync(`/run/netns/${a}`).ino;
      assert.ok(inode !== null);
      const outside = new FlowIdGenerator(flowNamespace(bootId, inode));
      assert.equal(start.flowId, outside.flowId(start.conntrackId), "namespace = boot + netns");

      // The source is closed: iteration ends at once, closing again is a no-op.
      for await (const batch of source.batches()) assert.fail(`batch after close: ${batch.length}`);
      source.close();
      assert.equal(lib.closed, false);
    }
    assert.equal(library.closed, true, "library closed by `using`");
  },
});

// ---------------------------------------------------------------------------------------------
// d. Without CAP_NET_ADMIN.

Deno.test({
  name: "CLI run as nobody (no CAP_NET_ADMIN) exits 1 with one error line naming CAP_NET_ADMIN " +
    "and no stack trace",
  ignore,
  async fn(): Promise<void> {
    await using ns = await createNetnsPair();
    // A bundle in a world-readable temp dir, and a DENO_DIR nobody owns: works wherever the repo
    // lives (e.g. under /root) and whatever root's Deno cache permissions are.
    const dir = await Deno.makeTempDir({ prefix: "nbct-it-" });
    try {
      await Deno.chmod(dir, 0o755);
      const bundle = `${dir}/netbird-ct.js`;
      await check([DENO, "bundle", "--quiet", "--platform=deno", "-o", bundle, MAIN], {
        cwd: ROOT,
      });
      const denoDir = `${dir}/deno-dir`;
      await Deno.mkdir(denoDir);
      await Deno.chown(denoDir, 65534, 65534);
      const nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
      const cli = [DENO, "run", "-A", bundle, "-n", "100.64.0.0/16", "-a", ADDR.a4, "-o", "-"];
      const r = await runIn(
        ns.a,
        [...nobody, ...cli],
        {
          clearEnv: true,
          cwd: dir,
          env: {
            PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
            HOME: denoDir,
            DENO_DIR: denoDir,
            NO_COLOR: "1",
          },
        },
      );
      assert.equal(r.code, 1, `exit code; stderr:\n${r.stderr}`);
      assert.equal(r.stdout, "", "no records");
      const lines = r.stderr.trimEnd().split("\n");
      assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
      assert.match(lines[0]!, /^netbird-ct: .*CAP_NET_ADMIN/);
      assert.doesNotMatch(r.stderr, /\n\s+at |ConntrackError|Uncaught/, "no stack trace");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
