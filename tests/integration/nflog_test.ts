/**
 * Real-kernel test of `--nflog-group`: an nft rule in A logs and drops TCP SYNs to port 9099
 * (`log group 7 prefix "rule-abc" drop`), B tries to connect, and the CLI in A must write a
 * "drop" record for them. Root only.
 *
 * Run: `deno task test:kernel` (= `deno test --allow-all tests/integration`).
 */

import assert from "node:assert/strict";
import { ADDR, checkIn, createNetnsPair } from "./_netns.ts";
import { ignore, interrupt, peer, readRecords, READY, startCli, waitOutput } from "./_cli.ts";

const GROUP = 7;
const PORT = 9099;
const RULE = "rule-abc";

interface DropLine {
  "event_id": string;
  "flow_id": string;
  type: string;
  direction: string;
  protocol: number;
  "source_ip": string;
  "dest_ip": string;
  "source_port": number;
  "dest_port": number;
  "rx_packets": number;
  "tx_packets": number;
  "rx_bytes": number;
  "conntrack_id": number;
  "rule_id": string | null;
}

/** In namespace `ns`: log TCP SYNs to PORT to NFLOG group GROUP with prefix RULE, and drop them. */
async function addDropRule(ns: string): Promise<void> {
  await checkIn(ns, ["nft", "add table inet nbctdrop"]);
  await checkIn(ns, [
    "nft",
    "add chain inet nbctdrop input { type filter hook input priority -10 ; policy accept ; }",
  ]);
  await checkIn(ns, [
    "nft",
    `add rule inet nbctdrop input tcp dport ${PORT} log group ${GROUP} prefix "${RULE}" drop`,
  ]);
}

/** A namespace pair with the drop rule in A, and the CLI started in A with `flags`. */
async function withDropRule(
  flags: string[],
  body: (ctx: { b: string; output: string; cli: ReturnType<typeof startCli> }) => Promise<void>,
): Promise<void> {
  await using ns = await createNetnsPair();
  const { a, b } = ns;
  const dir = await Deno.makeTempDir({ prefix: "nbct-nflog-" });
  try {
    await addDropRule(a);
    const output = `${dir}/out.jsonl`;
    await using cli = startCli(a, output, flags, ["-n", "100.64.0.0/16", "-a", ADDR.a4]);
    await body({ b, output, cli });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "CLI with --nflog-group writes a drop record (rule_id = log prefix, ingress, tuple) for " +
    "each SYN an nft rule logs and drops, and exits 0 on SIGINT",
  ignore,
  async fn(): Promise<void> {
    await withDropRule(["--nflog-group", String(GROUP)], async ({ b, output, cli }) => {
      await cli.waitFor(READY, "stderr");
      await cli.waitFor(`Listening for NFLOG group ${GROUP}`, "stderr");

      // The SYN is dropped, so the connect never completes: the peer is killed on dispose.
      await using _client = peer(b, "tcp-connect", ADDR.a4, PORT, 1);
      const drops = (): DropLine[] =>
        readRecords<DropLine>(output).filter((r) => r.type === "drop");
      await waitOutput(output, {
        what: () => `a drop record\nstderr:\n${cli.stderr}`,
        done: () => drops().length > 0,
        timeoutMs: 15_000,
      });
      assert.equal(await interrupt(cli), 0, cli.stderr);

      const records = readRecords<DropLine>(output, { complete: true });
      const dropped = records.filter((r) => r.type === "drop");
      assert.ok(dropped.length >= 1, JSON.stringify(records));
      for (const r of dropped) {
        assert.equal(r.rule_id, RULE);
        assert.equal(r.direction, "ingress");
        assert.equal(r.protocol, 6);
        assert.equal(r.source_ip, ADDR.b4);
        assert.equal(r.dest_ip, ADDR.a4);
        assert.equal(r.dest_port, PORT);
        assert.ok(r.source_port > 0);
        assert.equal(r.rx_packets, 1);
        assert.equal(r.tx_packets, 0);
        assert.ok(r.rx_bytes >= 40);
        assert.equal(r.conntrack_id, 0);
        assert.match(r.flow_id, /^[0-9a-f-]{36}$/);
      }
      assert.equal(new Set(dropped.map((r) => r.flow_id)).size, dropped.length, "fresh flow_ids");
      assert.equal(new Set(dropped.map((r) => r.event_id)).size, dropped.length);
      // The dropped SYNs never got a confirmed conntrack entry: no start/end for port 9099.
      assert.equal(records.filter((r) => r.type !== "drop" && r.dest_port === PORT).length, 0);
      assert.match(cli.stderr, /NFLOG group 7: drops=[1-9]/);
    });
  },
});

Deno.test({
  name: "CLI with --source nflog writes the drop records and nothing from conntrack",
  ignore,
  async fn(): Promise<void> {
    await withDropRule(["--source", "nflog", "--nflog-group", String(GROUP)], async (
      { b, output, cli },
    ) => {
      await cli.waitFor("No conntrack events (--source nflog)", "stderr");
      await cli.waitFor(`Listening for NFLOG group ${GROUP}`, "stderr");
      // Allowed overlay traffic that conntrack tracks (the default source writes start and end
      // records for it), then a dropped SYN.
      await checkIn(b, ["ping", "-c", "2", "-i", "0.2", "-W", "2", ADDR.a4]);
      await using _client = peer(b, "tcp-connect", ADDR.a4, PORT, 1);
      await waitOutput(output, {
        what: () => `a drop record\nstderr:\n${cli.stderr}`,
        done: () => readRecords<DropLine>(output).some((r) => r.type === "drop"),
        timeoutMs: 15_000,
      });
      assert.equal(await interrupt(cli), 0, cli.stderr);
      const records = readRecords<DropLine>(output, { complete: true });
      assert.ok(records.length >= 1);
      assert.deepEqual(
        records.filter((r) => r.type !== "drop"),
        [],
        "no start/end records without the conntrack source",
      );
      assert.ok(records.every((r) => r.rule_id === RULE && r.dest_port === PORT));
    });
  },
});
