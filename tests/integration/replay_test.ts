/**
 * Real-kernel test of `netbird-ct replay`: traffic in a throwaway namespace pair is captured with
 * dumpcap on A's veth while `conntrack -E` records the kernel's DESTROY events (with
 * nf_conntrack_acct=1); the replayed flows must match the kernel's, tuple, direction and
 * counters. Root only.
 *
 * Run: `deno test --allow-all tests/integration/replay_test.ts`.
 */

import assert from "node:assert/strict";
import { type CapturedPacket, decodePacket, parseCapture } from "../../lib/capture/mod.ts";
import { ADDR, checkIn, createNetnsPair, run, spawnIn, waitUntil } from "./_netns.ts";
import {
  DENO,
  fileSize,
  flush,
  ignore,
  type KernelEvent,
  MAIN,
  OVERLAY_FLAGS,
  parseKernel,
  ping,
  type RecordLine,
  ROOT,
} from "./_cli.ts";
import { matchKernelFlows, traffic } from "./_oracle.ts";

const dumpcapMissing = (await run(["sh", "-c", "command -v dumpcap"]).catch(() => undefined))
  ?.code !== 0;

Deno.test({
  name: "replay of a dumpcap capture reproduces the kernel's conntrack flows: tuples, " +
    "directions, packets and bytes per direction; non-overlay traffic, ARP and NDP make no flows",
  ignore: ignore || dumpcapMissing,
  async fn(): Promise<void> {
    await using ns = await createNetnsPair();
    const { a, b } = ns;
    const dir = await Deno.makeTempDir({ prefix: "nbct-replay-" });
    try {
      await checkIn(a, ["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_acct=1"]);
      await using events = spawnIn(a, [
        "conntrack",
        "-E",
        "-e",
        "NEW,DESTROY",
        "-o",
        "id,extended",
      ]);
      // conntrack -E prints nothing until an event: ping (non-overlay) until it shows one.
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

      const capture = `${dir}/capture.pcapng`;
      await using dumpcap = spawnIn(a, ["dumpcap", "-i", "veth-a", "-w", capture, "-q"]);
      await dumpcap.waitFor("Capturing on", "stderr");
      await waitUntil("dumpcap to write the file header", () => fileSize(capture) > 0);

      await traffic(a, b, 9100);
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
      // Let the last frames reach the capture file, then stop dumpcap (it flushes on SIGTERM).
      await new Promise((r) => setTimeout(r, 300));
      dumpcap.kill("SIGTERM");
      await dumpcap.wait();

      const out = `${dir}/replay.jsonl`;
      const replayed = await run(
        [DENO, "run", "-A", MAIN, "replay", ...OVERLAY_FLAGS, "-o", out, capture],
        { cwd: ROOT, env: { NO_COLOR: "1" } },
      );
      assert.equal(replayed.code, 0, `replay exit code; stderr:\n${replayed.stderr}`);
      assert.match(replayed.stderr, /^Replayed: packets=\d+ /m, "summary line");
      const records = Deno.readTextFileSync(out).split("\n").filter((l) => l !== "")
        .map((l) => JSON.parse(l) as RecordLine & { rule_id: string | null });

      const packets = parseCapture(Deno.readFileSync(capture)).records
        .map((r) => decodePacket(r)).filter((p) => p !== undefined);
      const detail = `\nkernel:\n${events.stdout}\nreplay:\n${
        records.map((r) => JSON.stringify(r)).join("\n")
      }\n${replayed.stderr}`;
      for (
        const { name, kernel: k, direction, want, got } of matchKernelFlows(
          records,
          destroys(),
          detail,
        )
      ) {
        if (k.protocol === 6) {
          // Documented difference: NetBird's TCP tracker reports `end` when the connection enters
          // TIME-WAIT or CLOSED, so the last ACK of the close (counted by the kernel) comes after
          // the end record. It must be exactly the flow's last packet in the capture, a bare ACK.
          const own = (p: CapturedPacket): boolean => p.source === ADDR.a4 || p.source === ADDR.a6;
          const last = packets.filter((p) =>
            p.protocol === 6 &&
            ((p.source === k.source && p.destination === k.dest &&
              p.sourcePort === k.sourcePort && p.destinationPort === k.destPort) ||
              (p.source === k.dest && p.destination === k.source &&
                p.sourcePort === k.destPort && p.destinationPort === k.sourcePort))
          ).at(-1);
          assert.ok(last !== undefined, `${name}: in the capture`);
          assert.equal(last.tcpFlags, 0x10, `${name}: the last packet is a bare ACK`);
          if (own(last)) {
            got.txPackets++;
            got.txBytes += last.ipLength;
          } else {
            got.rxPackets++;
            got.rxBytes += last.ipLength;
          }
        }
        assert.deepEqual(
          got,
          want,
          `${name}: counters (kernel ${direction}: tx = ${
            direction === "egress" ? "orig" : "reply"
          })${detail}`,
        );
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
