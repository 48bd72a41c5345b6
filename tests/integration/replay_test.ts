/**
 * Real-kernel test of `netbird-ct replay`: traffic in a throwaway namespace pair is captured with
 * dumpcap on A's veth while `conntrack -E` records the kernel's DESTROY events (with
 * nf_conntrack_acct=1); the replayed flows (default `--tcp-end expire`) must match the kernel's
 * exactly: tuple, direction and counters. With `--tcp-end close` (NetBird's timing), flows that
 * close through TIME-WAIT are exactly the close's final ACK short. Root only.
 *
 * Run: `deno test --allow-all tests/integration/replay_test.ts`.
 */

import assert from "node:assert/strict";
import { type CapturedPacket, decodePacket, parseCapture } from "../../lib/capture/mod.ts";
import { ADDR, createNetnsPair, run, spawnIn, waitUntil } from "./_netns.ts";
import {
  DENO,
  fileSize,
  flush,
  ignore,
  type KernelEvent,
  MAIN,
  OVERLAY_FLAGS,
  parseKernel,
  type RecordLine,
  ROOT,
} from "./_cli.ts";
import {
  assertKernelCounters,
  matchKernelFlows,
  TCP_CLOSES,
  traffic,
  watchKernel,
} from "./_oracle.ts";

const BASE = 9100;

type ReplayRecord = RecordLine & { rule_id: string | null };

const dumpcapMissing = (await run(["sh", "-c", "command -v dumpcap"]).catch(() => undefined))
  ?.code !== 0;

Deno.test({
  name: "replay of a dumpcap capture reproduces the kernel's conntrack flows exactly: tuples, " +
    "directions, packets and bytes per direction (TCP normal close, half-close, RST, refused, " +
    "long transfer, UDP, pings); --tcp-end close is the close's final ACK short; non-overlay " +
    "traffic, ARP and NDP make no flows",
  ignore: ignore || dumpcapMissing,
  async fn(): Promise<void> {
    await using ns = await createNetnsPair();
    const { a, b } = ns;
    const dir = await Deno.makeTempDir({ prefix: "nbct-replay-" });
    try {
      const kernel = await watchKernel(a);
      await using events = kernel.events;
      const probeIds = kernel.probeIds;

      const capture = `${dir}/capture.pcapng`;
      // A 64 MiB kernel buffer (default 2 MiB): the 1 MB transfer must not overrun it.
      await using dumpcap = spawnIn(a, [
        "dumpcap",
        "-i",
        "veth-a",
        "-B",
        "64",
        "-w",
        capture,
        "-q",
      ]);
      await dumpcap.waitFor("Capturing on", "stderr");
      await waitUntil("dumpcap to write the file header", () => fileSize(capture) > 0);

      await traffic(a, b, BASE);
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
      // A frame dumpcap lost would make a flow short of the kernel for a reason of its own.
      assert.match(
        dumpcap.stderr,
        /received\/dropped on interface '[^']*': \d+\/0 /,
        "dumpcap dropped nothing",
      );

      const replay = async (
        extra: string[],
      ): Promise<{ records: ReplayRecord[]; stderr: string }> => {
        const out = `${dir}/replay.jsonl`;
        const replayed = await run(
          [DENO, "run", "-A", MAIN, "replay", ...OVERLAY_FLAGS, ...extra, "-o", out, capture],
          { cwd: ROOT, env: { NO_COLOR: "1" } },
        );
        assert.equal(replayed.code, 0, `replay ${extra} exit code; stderr:\n${replayed.stderr}`);
        assert.match(replayed.stderr, /^Replayed: packets=\d+ /m, "summary line");
        const records = Deno.readTextFileSync(out).split("\n").filter((l) => l !== "")
          .map((l) => JSON.parse(l) as ReplayRecord);
        return { records, stderr: replayed.stderr };
      };
      const details = (records: ReplayRecord[], stderr: string): string =>
        `\nkernel:\n${events.stdout}\nreplay:\n${
          records.map((r) => JSON.stringify(r)).join("\n")
        }\n${stderr}`;

      const packets = parseCapture(Deno.readFileSync(capture)).records
        .map((r) => decodePacket(r)).filter((p) => p !== undefined);
      const segments = (k: KernelEvent): CapturedPacket[] =>
        packets.filter((p) =>
          p.protocol === 6 &&
          ((p.source === k.source && p.destination === k.dest &&
            p.sourcePort === k.sourcePort && p.destinationPort === k.destPort) ||
            (p.source === k.dest && p.destination === k.source &&
              p.sourcePort === k.destPort && p.destinationPort === k.sourcePort))
        );

      // Default (--tcp-end expire): every flow equals the kernel's, TCP included.
      const expire = await replay([]);
      const detail = details(expire.records, expire.stderr);
      const flows = matchKernelFlows(expire.records, destroys(), detail);
      assertKernelCounters(flows, detail);

      // The mix closes its TCP flows in every way it says it does.
      const tcpFlows = flows.filter((f) => f.kernel.protocol === 6);
      assert.deepEqual(
        tcpFlows.map((f) => f.kernel.destPort - BASE).sort((x, y) => x - y),
        [...TCP_CLOSES.keys()].sort((x, y) => x - y),
        "TCP flows of the mix",
      );
      const FIN = 0x01, SYN = 0x02, RST = 0x04, ACK = 0x10;
      for (const { name, kernel: k } of tcpFlows) {
        const segs = segments(k);
        const last = segs.at(-1)!;
        const fin = segs.find((p) => (p.tcpFlags & FIN) !== 0);
        const how = TCP_CLOSES.get(k.destPort - BASE);
        const shape = `${name} (${how}): ${segs.map((p) => p.tcpFlags.toString(16)).join(" ")}`;
        if (how === "time-wait" || how === "peer-first") {
          const closer = how === "time-wait" ? k.source : k.dest;
          assert.equal(fin?.source, closer, `${shape}: first FIN`);
          assert.equal(last.tcpFlags, ACK, `${shape}: last packet a bare ACK`);
          assert.equal(last.source, closer, `${shape}: last ACK from the first closer`);
        } else if (how === "rst") {
          assert.equal(fin, undefined, `${shape}: no FIN`);
          assert.equal(last.tcpFlags & RST, RST, `${shape}: last packet a RST`);
          assert.equal(last.source, k.source, `${shape}: RST from the initiator`);
        } else {
          assert.deepEqual(segs.map((p) => p.tcpFlags), [SYN, RST | ACK], shape);
        }
      }

      // --tcp-end close (NetBird §6.5): the same flows; those that close through TIME-WAIT lack
      // exactly the flow's last packet in the capture, the close's final ACK; the others (RST,
      // refused, peer closing first) equal the kernel's.
      const close = await replay(["--tcp-end", "close"]);
      const closeDetail = details(close.records, close.stderr);
      const closeFlows = matchKernelFlows(close.records, destroys(), closeDetail);
      let shortByOne = 0;
      for (const { name, kernel: k, want, got } of closeFlows) {
        if (k.protocol !== 6 || TCP_CLOSES.get(k.destPort - BASE) !== "time-wait") continue;
        assert.notDeepEqual(got, want, `${name}: --tcp-end close is short of the kernel`);
        const last = segments(k).at(-1)!;
        if (last.source === ADDR.a4 || last.source === ADDR.a6) {
          got.txPackets++;
          got.txBytes += last.ipLength;
        } else {
          got.rxPackets++;
          got.rxBytes += last.ipLength;
        }
        shortByOne++;
      }
      assert.equal(shortByOne, 4, "TIME-WAIT flows with --tcp-end close");
      // With the final ACK added back, --tcp-end close equals the kernel too.
      assertKernelCounters(closeFlows, closeDetail);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
