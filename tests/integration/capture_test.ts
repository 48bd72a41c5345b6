/**
 * Real-kernel test of `netbird-ct capture`: traffic in a throwaway namespace pair is captured
 * live on A's veth (an AF_PACKET socket) while `conntrack -E` records the kernel's DESTROY events
 * (with nf_conntrack_acct=1); after SIGINT the captured flows (default `--tcp-end expire`) must
 * match the kernel's exactly: tuple, direction and counters per direction, TCP included. Root
 * only. (`--tcp-end close`, which leaves the final ACK of a FIN close out, is checked against the
 * kernel by the replay test on a capture of the same traffic mix.)
 *
 * Run: `deno test --allow-all tests/integration/capture_test.ts`.
 */

import assert from "node:assert/strict";
import { createNetnsPair, run, waitUntil } from "./_netns.ts";
import {
  DENO,
  flush,
  ignore,
  interrupt,
  type KernelEvent,
  MAIN,
  OVERLAY_FLAGS,
  parseKernel,
  type RecordLine,
  ROOT,
  spawnDeno,
} from "./_cli.ts";
import { assertKernelCounters, matchKernelFlows, traffic, watchKernel } from "./_oracle.ts";

Deno.test({
  name: "capture on a live interface reproduces the kernel's conntrack flows exactly: tuples, " +
    "directions, packets and bytes per direction (TCP normal close, half-close, RST, refused, " +
    "long transfer, UDP, pings); SIGINT ends the remaining flows and exits 0",
  ignore,
  async fn(): Promise<void> {
    await using ns = await createNetnsPair();
    const { a, b } = ns;
    const dir = await Deno.makeTempDir({ prefix: "nbct-capture-" });
    try {
      const kernel = await watchKernel(a);
      await using events = kernel.events;
      const probeIds = kernel.probeIds;

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

      await traffic(a, b, 9200);
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

      const detail = `\nkernel:\n${events.stdout}\ncapture:\n${
        records.map((r) => JSON.stringify(r)).join("\n")
      }\n${cli.stderr}`;
      assertKernelCounters(matchKernelFlows(records, destroys(), detail), detail);
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
