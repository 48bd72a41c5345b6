import assert from "node:assert/strict";
import { capture, type OpenCapture, parseCaptureArgs, runCapture } from "../../lib/cli/capture.ts";
import { UsageError } from "../../lib/cli/args.ts";
import { linkTypeOfHatype } from "../../ffi/packet_socket.ts";
import { type CaptureRecord, LinkType, type LivePacketSource } from "../../lib/capture/mod.ts";
import { SourceError } from "../../lib/source.ts";
import { ipv4, udp } from "../_fakes/packet_builder.ts";

const decoder = new TextDecoder();
const FLAGS = ["-n", "100.64.0.0/16", "-n", "fd00:64::/64", "-a", "100.64.0.1"];
const neverOpened: OpenCapture = () => {
  throw new Error("a usage error must not open a socket");
};

/** Captured output of one run. */
function memoryIo(): { io: Parameters<typeof capture>[1]; out: () => string; err: () => string } {
  let stdout = "";
  let stderr = "";
  return {
    io: {
      stdout: { writeSync: (p: Uint8Array): number => (stdout += decoder.decode(p), p.length) },
      stderr: { writeSync: (p: Uint8Array): number => (stderr += decoder.decode(p), p.length) },
    },
    out: () => stdout,
    err: () => stderr,
  };
}

/** A capture socket that delivers the given batches, then ends (or fails). */
class FakeCapture implements LivePacketSource {
  closed = 0;
  constructor(readonly frames: CaptureRecord[][], readonly failure?: Error) {}
  async *batches(): AsyncGenerator<readonly CaptureRecord[]> {
    for (const batch of this.frames) {
      await Promise.resolve();
      yield batch;
    }
    if (this.failure !== undefined) throw this.failure;
  }
  stats(): { kernelDrops: number } {
    return { kernelDrops: 3 };
  }
  close(): void {
    this.closed++;
  }
}

/** A raw-IP frame captured `ms` after now (an idle batch moves the tracker's clock to now). */
const rawIp = (ms: number, data: Uint8Array): CaptureRecord => ({
  linkType: LinkType.RAW,
  timestampNs: BigInt(Date.now() + ms) * 1_000_000n,
  hasTimestamp: true,
  data,
  originalLength: data.length,
  interfaceIndex: 0,
  direction: "unknown",
  offset: 0,
});

Deno.test("parseCaptureArgs reads interface, overlay, output and namespace", () => {
  const o = parseCaptureArgs(["-i", "wt0", ...FLAGS, "-o", "out.jsonl", "--netns", "a"]);
  assert.equal(o.interface, "wt0");
  assert.deepEqual(o.networks, ["100.64.0.0/16", "fd00:64::/64"]);
  assert.deepEqual(o.addresses, ["100.64.0.1"]);
  assert.equal(o.output, "out.jsonl");
  assert.equal(o.netns, "a");
  assert.equal(o.logLevel, "info");
  assert.equal(o.tcpEnd, "expire", "--tcp-end defaults to expire (kernel-equal counters)");
  assert.equal(parseCaptureArgs(["-i", "wt0", ...FLAGS, "--tcp-end", "close"]).tcpEnd, "close");
});

Deno.test("parseCaptureArgs names the missing or invalid flag", () => {
  const cases: [string[], RegExp][] = [
    [FLAGS, /^missing --interface/],
    [["-i", "wt0", "-a", "100.64.0.1"], /^missing --network/],
    [["-i", "wt0", "-n", "100.64.0.0/16"], /^missing --address/],
    [["-i", "wt0", ...FLAGS, "-n", "nope"], /^invalid --network "nope"/],
    [["-i", "wt0", ...FLAGS, "-a", "x"], /^invalid --address "x"/],
    [["-i", "a/b", ...FLAGS], /^invalid --interface "a\/b"/],
    [["-i", "wt0", ...FLAGS, "extra"], /^unexpected argument "extra"/],
    [["-i", "wt0", ...FLAGS, "--log-level", "loud"], /^invalid --log-level "loud"/],
    [
      ["-i", "wt0", ...FLAGS, "--tcp-end", "timewait"],
      /^invalid --tcp-end "timewait": expected expire or close$/,
    ],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseCaptureArgs(args), (err: unknown) => {
      assert.ok(err instanceof UsageError);
      assert.match(err.message, message, args.join(" "));
      return true;
    });
  }
});

Deno.test("runCapture: usage errors exit 2, --help exits 0", async () => {
  let stdout = "";
  let stderr = "";
  const io = {
    stdout: { writeSync: (p: Uint8Array): number => (stdout += decoder.decode(p), p.length) },
    stderr: { writeSync: (p: Uint8Array): number => (stderr += decoder.decode(p), p.length) },
  };
  assert.equal(await runCapture(FLAGS, neverOpened, io), 2);
  assert.match(stderr, /^netbird-ct capture: missing --interface.*see netbird-ct capture --help/);
  stderr = "";
  assert.equal(await runCapture(["-i", "wt0", ...FLAGS, "--tcp-end", "never"], neverOpened, io), 2);
  assert.equal(
    stderr,
    'netbird-ct capture: invalid --tcp-end "never": expected expire or close ' +
      "(see netbird-ct capture --help)\n",
  );
  assert.equal(await runCapture(["--help"], neverOpened, io), 0);
  assert.match(stdout, /^netbird-ct capture: /);
  assert.match(stdout, /--source packet --capture-interface IFACE/);
  assert.match(stdout, /--tcp-end WHEN .* default: expire\n/);
  assert.match(stdout, /or the capture stops\./);
});

Deno.test("linkTypeOfHatype: Ethernet and loopback keep the header, tunnels are raw IP", () => {
  assert.equal(linkTypeOfHatype(1), LinkType.ETHERNET);
  assert.equal(linkTypeOfHatype(772), LinkType.ETHERNET);
  assert.equal(linkTypeOfHatype(0xfffe), LinkType.RAW);
  assert.equal(linkTypeOfHatype(519), LinkType.RAW);
  assert.equal(linkTypeOfHatype(24), -1);
});

Deno.test("capture turns the frames of a socket into flow records and reports its drops", async () => {
  const a = "100.64.0.1";
  const b = "100.64.0.2";
  const socket = new FakeCapture([
    [rawIp(0, ipv4({ source: a, destination: b, protocol: 17, payload: udp(4000, 53, [1, 2]) }))],
    [],
    [rawIp(5, ipv4({ source: b, destination: a, protocol: 17, payload: udp(53, 4000, [3]) }))],
  ]);
  const { io, out, err } = memoryIo();
  const options = parseCaptureArgs(["-i", "wt0", ...FLAGS]);
  assert.equal(await capture(options, io, { open: () => socket }), 0);
  const records = out().trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(records.map((r) => r.type), ["start", "end"], "the stop ends the open flow");
  const end = records[1];
  assert.equal(end.source_ip, a);
  assert.equal(end.dest_port, 53);
  assert.equal(end.direction, "egress");
  assert.deepEqual([end.tx_packets, end.rx_packets], [1, 1]);
  assert.ok(socket.closed >= 1, "the socket is closed");
  assert.match(err(), /kernel_drops=3/);
});

Deno.test("capture reports a source failure in one line and exits 1", async () => {
  const { io, err } = memoryIo();
  const options = parseCaptureArgs(["-i", "wt0", ...FLAGS]);
  const cannotOpen: OpenCapture = () => {
    throw new SourceError("Cannot capture on wt9: no such interface");
  };
  assert.equal(await capture(options, io, { open: cannotOpen }), 1);
  assert.equal(err(), "netbird-ct capture: Cannot capture on wt9: no such interface\n");
  const failing = new FakeCapture([], new SourceError("Cannot receive frames: ENETDOWN"));
  const second = memoryIo();
  assert.equal(await capture(options, second.io, { open: () => failing }), 1);
  assert.match(second.err(), /^netbird-ct capture: Cannot receive frames: ENETDOWN$/m);
});
