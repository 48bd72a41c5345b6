/**
 * Real-kernel test of `netbird-ct capture`: traffic in a throwaway namespace pair is captured
 * live on A's veth (an AF_PACKET socket) while `conntrack -E` records the kernel's DESTROY events
 * (with nf_conntrack_acct=1); after SIGINT the captured flows must match the kernel's: tuple,
 * direction and counters per direction. Root only.
 *
 * Run: `deno test --allow-all tests/integration/capture_test.ts`.
 */

import assert from "node:assert/strict";
import { ADDR, checkIn, createNetnsPair, type Proc, run, waitUntil } from "./_netns.ts";
import {
  DENO,
  flush,
  ignore,
  interrupt,
  type KernelEvent,
  MAIN,
  OVERLAY_FLAGS,
  parseKernel,
  peer,
  ping,
  type RecordLine,
  ROOT,
  spawnDeno,
} from "./_cli.ts";
import { spawnIn } from "./_netns.ts";

function inOverlay(address: string): boolean {
  return address.startsWith("100.64.") || address.startsWith("fd00:64::");
}

async function traffic(a: string, b: string): Promise<void> {
  const servers = [
    peer(b, "tcp-server", ADDR.b4, 9201, 1),
    peer(b, "tcp-server", ADDR.b6, 9202, 1),
    peer(a, "tcp-server", ADDR.a4, 9203, 1),
    peer(b, "udp-server", ADDR.b4, 9204, 1),
    peer(b, "udp-server", ADDR.b6, 9205, 1),
    peer(a, "udp-server", ADDR.a4, 9206, 1),
    peer(b, "tcp-server", ADDR.bOther4, 9207, 1),
  ];
  const clients: Proc[] = [];
  try {
    await Promise.all(servers.map((s) => s.waitFor("ready")));
    clients.push(
      peer(a, "tcp-client", ADDR.b4, 9201, 5000),
      peer(a, "tcp-client", ADDR.b6, 9202, 2000),
      peer(b, "tcp-client", ADDR.a4, 9203, 3000),
      peer(a, "udp-client", ADDR.b4, 9204, 100),
      peer(a, "udp-client", ADDR.b6, 9205, 200),
      peer(b, "udp-client", ADDR.a4, 9206, 300),
      peer(a, "tcp-client", ADDR.bOther4, 9207, 700),
    );
    await Promise.all([...clients, ...servers].map((p) => p.success()));
    await ping(a, ADDR.b4);
    await ping(a, ADDR.b6);
  } finally {
    for (const p of [...clients, ...servers]) await p[Symbol.asyncDispose]();
  }
}

Deno.test({
  name: "capture on a live interface reproduces the kernel's conntrack flows: tuples, " +
    "directions, packets and bytes per direction; SIGINT ends open flows and exits 0",
  ignore,
  async fn(): Promise<void> {
    await using ns = await createNetnsPair();
    const { a, b } = ns;
    const dir = await Deno.makeTempDir({ prefix: "nbct-capture-" });
    try {
      await checkIn(a, ["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_acct=1"]);
      const timestamps = (await checkIn(a, ["sysctl", "-n", "net.ipv4.tcp_timestamps"])).trim();
      await using events = spawnIn(a, [
        "conntrack",
        "-E",
        "-e",
        "NEW,DESTROY",
        "-o",
        "id,extended",
      ]);
      await waitUntil(
        "conntrack -E to report a probe ping",
        async () => {
          await ping(a, ADDR.bOther4);
          return parseKernel(events.stdout).some((e) => e.dest === ADDR.bOther4);
        },
        10_000,
        100,
      );
      await flush(a);
      const probeIds = new Set(parseKernel(events.stdout).map((e) => e.id));

      const out = `${dir}/capture.jsonl`;
      await using cli = spawnDeno(a, [
        MAIN,
        "capture",
        "-i",
        "veth-a",
        ...OVERLAY_FLAGS,
        "-o",
        out,
      ]);
      await cli.waitFor("capturing on veth-a", "stderr");

      await traffic(a, b);
      await flush(a);

      const destroys = (): KernelEvent[] =>
        parseKernel(events.stdout).filter((e) => e.type === "DESTROY" && !probeIds.has(e.id));
      await waitUntil(
        () => `every NEW to be DESTROYed:\n${events.stdout}`,
        () => {
          const all = parseKernel(events.stdout).filter((e) => !probeIds.has(e.id));
          const gone = new Set(destroys().map((e) => e.id));
          return all.length > 0 && all.every((e) => gone.has(e.id));
        },
      );
      await new Promise((r) => setTimeout(r, 300));
      const code = await interrupt(cli);
      assert.equal(code, 0, `capture exit code; stderr:\n${cli.stderr}`);
      assert.match(cli.stderr, /^Captured: packets=\d+ .* kernel_drops=0$/m, "summary line");
      const records = Deno.readTextFileSync(out).split("\n").filter((l) => l !== "")
        .map((l) => JSON.parse(l) as RecordLine & { rule_id: string | null });

      const kernel = destroys().filter((e) => inOverlay(e.source) || inOverlay(e.dest));
      const nonOverlay = destroys().filter((e) => !inOverlay(e.source) && !inOverlay(e.dest));
      // 3 TCP, 3 UDP, 2 pings; the non-overlay TCP connection is only in the kernel's view.
      assert.equal(kernel.length, 8, `overlay DESTROYs:\n${events.stdout}`);
      assert.ok(nonOverlay.length >= 1, "the kernel saw the non-overlay connection");

      const detail = `\nkernel:\n${events.stdout}\ncapture:\n${
        records.map((r) => JSON.stringify(r)).join("\n")
      }\n${cli.stderr}`;
      const ends = records.filter((r) => r.type === "end");
      const starts = records.filter((r) => r.type === "start");
      assert.equal(starts.length, kernel.length, `one start per kernel flow${detail}`);
      assert.equal(ends.length, kernel.length, `one end per kernel flow${detail}`);
      assert.equal(records.length, 2 * kernel.length, `nothing else (no ARP/NDP flows)${detail}`);
      for (const r of records) {
        assert.ok(inOverlay(r.source_ip) || inOverlay(r.dest_ip), `overlay only${detail}`);
        assert.equal(r.rule_id, null, "rule_id");
      }
      for (const k of kernel) {
        const icmp = k.protocol === 1 || k.protocol === 58;
        const name = `${k.protocol} ${k.source}:${k.sourcePort} → ${k.dest}:${k.destPort}`;
        const match = (r: RecordLine): boolean =>
          r.protocol === k.protocol && r.source_ip === k.source && r.dest_ip === k.dest &&
          (icmp
            ? r.icmp_type === k.icmpType && r.icmp_code === k.icmpCode
            : r.source_port === k.sourcePort && r.dest_port === k.destPort);
        const start = starts.filter(match);
        const end = ends.filter(match);
        assert.equal(start.length, 1, `${name}: one start${detail}`);
        assert.equal(end.length, 1, `${name}: one end${detail}`);
        assert.equal(start[0]!.flow_id, end[0]!.flow_id, `${name}: flow_id`);
        const direction = k.source === ADDR.a4 || k.source === ADDR.a6 ? "egress" : "ingress";
        const e = end[0]!;
        assert.equal(e.direction, direction, `${name}: direction`);
        assert.equal(start[0]!.direction, direction, `${name}: start direction`);
        assert.ok(k.orig !== undefined && k.reply !== undefined, `${name}: kernel counters`);
        const [tx, rx] = direction === "egress" ? [k.orig, k.reply] : [k.reply, k.orig];
        const want = {
          txPackets: tx.packets,
          txBytes: tx.bytes,
          rxPackets: rx.packets,
          rxBytes: rx.bytes,
        };
        const got = {
          txPackets: e.tx_packets,
          txBytes: e.tx_bytes,
          rxPackets: e.rx_packets,
          rxBytes: e.rx_bytes,
        };
        if (k.protocol === 6) {
          // Documented difference (as in replay): NetBird's TCP tracker reports `end` when the
          // connection enters TIME-WAIT or CLOSED, so the last ACK of the close, which the
          // kernel counts, comes after the end record. Exactly one bare ACK (IP header + 20-byte
          // TCP header + 12 bytes of timestamps when enabled) in exactly one direction is
          // missing.
          const ack = (k.source.includes(":") ? 40 : 20) + 20 + (timestamps === "0" ? 0 : 12);
          const missingTx = { ...got, txPackets: got.txPackets + 1, txBytes: got.txBytes + ack };
          const missingRx = { ...got, rxPackets: got.rxPackets + 1, rxBytes: got.rxBytes + ack };
          assert.ok(
            JSON.stringify(missingTx) === JSON.stringify(want) ||
              JSON.stringify(missingRx) === JSON.stringify(want),
            `${name}: counters are the kernel's less one ${ack}-byte ACK: got ${
              JSON.stringify(got)
            }, kernel ${JSON.stringify(want)}${detail}`,
          );
          continue;
        }
        assert.deepEqual(got, want, `${name}: counters (kernel ${direction})${detail}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "capture names an unknown interface in one line and exits 1 (--netns)",
  ignore,
  async fn(): Promise<void> {
    await using ns = await createNetnsPair();
    const r = await run(
      [DENO, "run", "-A", MAIN, "capture", "--netns", ns.a, "-i", "veth-b", ...OVERLAY_FLAGS],
      { cwd: ROOT, env: { NO_COLOR: "1" } },
    );
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr,
      `netbird-ct capture: Cannot capture on "veth-b": no such interface in network namespace ` +
        `"${ns.a}"\n`,
    );
  },
});
