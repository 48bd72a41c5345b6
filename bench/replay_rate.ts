/**
 * Replay rate: `netbird-ct replay` against `tshark -z conv,tcp` (and `softflowd -r`, when
 * installed) over the same large capture, in one run. Run: `deno task bench:replay` (through
 * `scripts/bench-replay.sh`, which also removes the capture if this process crashes).
 *
 * 1. generate: a classic pcap (Ethernet, microsecond timestamps) of `--packets` packets in a
 *    temporary directory, written with the test helpers (tests/_fakes/packet_builder.ts and
 *    pcap_writer.ts). `--concurrent` flows are open at any time; each packet comes from a
 *    pseudo-randomly chosen open flow, and a flow that has sent its last packet is replaced by
 *    a new one. Flows (all inside 100.64.0.0/10; the capturing host is 100.64.0.1):
 *    - 50 % TCP: SYN, SYN-ACK, ACK, 1–20 request/response data segments (PSH|ACK, 40–200 and
 *      100–1400 bytes), FIN|ACK, FIN|ACK, ACK; outbound to port 443 or inbound to port 22;
 *    - 35 % UDP: 1–10 request/response pairs (40–300 bytes), outbound to 53/123/51820 or inbound;
 *    - 15 % ICMP echo: 1–10 request/reply pairs (56 bytes of data), either direction.
 *    Packets are 10 µs apart (1M packets = 10 s of capture), so no idle timeout expires.
 * 2. time, `--runs` times each, interleaved, with `/usr/bin/time -f "%e %U %S %M"`:
 *    - `deno run -A main.ts replay -n 100.64.0.0/10 -a 100.64.0.1 -o /dev/null FILE`
 *    - `tshark -q -r FILE -z conv,tcp`
 *    - `softflowd -r FILE -n 127.0.0.1:1` (if on PATH)
 *    Rate = packets in the file / wall seconds of the whole process (start-up included); CPU =
 *    user + system seconds. The replay summary and tshark's conversation count are checked
 *    against what was generated.
 * 3. remove the temporary directory.
 *
 *   deno task bench:replay [--packets 1000000] [--runs 3] [--concurrent 2000] [--seed 1]
 *                          [--keep FILE]   # also copy the capture to FILE
 *
 * @module
 */
// deno-lint-ignore-file no-console
import { parseArgs } from "node:util";
import { ethernet, icmp, ipv4, tcp, udp } from "../tests/_fakes/packet_builder.ts";
import { type PcapRecordInit, writePcap } from "../tests/_fakes/pcap_writer.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);
const OWN = "100.64.0.1";
const NETWORK = "100.64.0.0/10";

const { values: flags } = parseArgs({
  args: Deno.args,
  strict: true,
  options: {
    packets: { type: "string", default: "1000000" },
    runs: { type: "string", default: "3" },
    concurrent: { type: "string", default: "2000" },
    seed: { type: "string", default: "1" },
    keep: { type: "string" },
  },
});
function positive(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} "${text}": want an integer ≥ 1`);
  return n;
}
const PACKETS = positive("packets", flags.packets);
const RUNS = positive("runs", flags.runs);
const CONCURRENT = positive("concurrent", flags.concurrent);

// --- generation -----------------------------------------------------------------------------

let seed = positive("seed", flags.seed) >>> 0;
/** xorshift32: deterministic, so every run replays the same file. */
function random(): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 0x100000000;
}
function between(low: number, high: number): number {
  return low + Math.floor(random() * (high - low + 1));
}

const SYN = 0x02, FIN = 0x01, PSH = 0x08, ACK = 0x10;
const ZEROS = new Uint8Array(1500);
const zeros = (n: number): Uint8Array => ZEROS.subarray(0, n);

/** One generated flow: the frames still to send, in order. */
interface Flow {
  frames: Uint8Array[];
  next: number;
}

const generated = { tcp: 0, udp: 0, icmp: 0 };
let peerCounter = 0;
/** A peer address in 100.64.0.0/10 other than the host itself. */
function peer(): string {
  const n = 2 + (peerCounter++ % 4_000_000);
  return `100.${64 + (n >>> 16)}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}
let portCounter = 0;
function ephemeral(): number {
  return 32768 + (portCounter++ % 28000);
}

function newFlow(): Flow {
  const kind = random();
  const outbound = random() < 0.5;
  const other = peer();
  const [client, server] = outbound ? [OWN, other] : [other, OWN];
  const frames: Uint8Array[] = [];
  const ip4 = (up: boolean, protocol: number, payload: Uint8Array): Uint8Array =>
    ethernet(
      0x0800,
      ipv4({
        source: up ? client : server,
        destination: up ? server : client,
        protocol,
        payload,
      }),
    );
  if (kind < 0.5) {
    generated.tcp++;
    const cport = ephemeral();
    const sport = outbound ? 443 : 22;
    const seg = (up: boolean, f: number, n = 0): Uint8Array =>
      ip4(up, 6, up ? tcp(cport, sport, f, zeros(n)) : tcp(sport, cport, f, zeros(n)));
    frames.push(seg(true, SYN), seg(false, SYN | ACK), seg(true, ACK));
    for (let i = between(1, 20); i > 0; i--) {
      frames.push(
        seg(true, PSH | ACK, between(40, 200)),
        seg(false, PSH | ACK, between(100, 1400)),
      );
    }
    frames.push(seg(true, FIN | ACK), seg(false, FIN | ACK), seg(true, ACK));
  } else if (kind < 0.85) {
    generated.udp++;
    const cport = ephemeral();
    const sport = outbound ? [53, 123, 51820][between(0, 2)]! : 5000 + between(0, 99);
    for (let i = between(1, 10); i > 0; i--) {
      frames.push(
        ip4(true, 17, udp(cport, sport, zeros(between(40, 300)))),
        ip4(false, 17, udp(sport, cport, zeros(between(40, 300)))),
      );
    }
  } else {
    generated.icmp++;
    const id = between(1, 65535);
    for (let i = between(1, 10), seq = 1; i > 0; i--, seq++) {
      frames.push(
        ip4(true, 1, icmp(8, 0, id, seq, zeros(56))),
        ip4(false, 1, icmp(0, 0, id, seq, zeros(56))),
      );
    }
  }
  return { frames, next: 0 };
}

async function generate(path: string): Promise<number> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const header = writePcap({ linkType: 1 }, []);
  await file.write(header);
  let bytes = header.length;
  const open: Flow[] = [];
  for (let i = 0; i < CONCURRENT; i++) open.push(newFlow());
  const base = 1_767_225_600; // 2026-01-01T00:00:00Z
  let batch: PcapRecordInit[] = [];
  for (let n = 0; n < PACKETS; n++) {
    const slot = Math.floor(random() * open.length);
    const flow = open[slot]!;
    const data = flow.frames[flow.next++]!;
    if (flow.next === flow.frames.length) open[slot] = newFlow();
    const us = n * 10;
    batch.push({ seconds: base + Math.floor(us / 1e6), fraction: us % 1e6, data });
    if (batch.length === 10_000 || n === PACKETS - 1) {
      // writePcap makes a whole file: drop its 24-byte header.
      const chunk = writePcap({ linkType: 1 }, batch).subarray(24);
      for (let at = 0; at < chunk.length;) at += await file.write(chunk.subarray(at));
      bytes += chunk.length;
      batch = [];
    }
  }
  file.close();
  return bytes;
}

// --- timing ---------------------------------------------------------------------------------

interface Timed {
  wall: number;
  cpu: number;
  rssMiB: number;
  stdout: string;
  stderr: string;
}

async function timed(argv: string[], dir: string): Promise<Timed> {
  const timeFile = `${dir}/time.txt`;
  const out = await new Deno.Command("/usr/bin/time", {
    args: ["-f", "%e %U %S %M", "-o", timeFile, ...argv],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) {
    throw new Error(`${argv.join(" ")} exited ${out.code}: ${stderr.slice(-2000)}`);
  }
  const line = (await Deno.readTextFile(timeFile)).trim().split("\n").at(-1) ?? "";
  const [wall, user, system, rss] = line.split(" ").map(Number);
  return {
    wall: wall!,
    cpu: user! + system!,
    rssMiB: rss! / 1024,
    stdout,
    stderr,
  };
}

function have(tool: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${tool}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function triple(values: number[], digits: number): string {
  const s = [...values].sort((a, b) => a - b);
  return `${s[0]!.toFixed(digits)}/${median(s).toFixed(digits)}/${s.at(-1)!.toFixed(digits)}`;
}

// --- main -----------------------------------------------------------------------------------

const dir = Deno.env.get("TMPDIR") !== undefined
  ? await Deno.makeTempDir({ dir: Deno.env.get("TMPDIR")!, prefix: "replay-" })
  : await Deno.makeTempDir({ prefix: "netbird-ct-bench-replay-" });
const cleanup = (): void => {
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch {
    // already gone
  }
};
Deno.addSignalListener("SIGINT", () => {
  cleanup();
  Deno.exit(130);
});
Deno.addSignalListener("SIGTERM", () => {
  cleanup();
  Deno.exit(143);
});

try {
  const capture = `${dir}/capture.pcap`;
  const t0 = performance.now();
  const bytes = await generate(capture);
  const flowsGenerated = generated.tcp + generated.udp + generated.icmp;
  console.log(
    `generated ${PACKETS} packets, ${(bytes / 2 ** 20).toFixed(1)} MiB, ${flowsGenerated} flows ` +
      `started (tcp ${generated.tcp}, udp ${generated.udp}, icmp ${generated.icmp}; the last ` +
      `${CONCURRENT} possibly unfinished) in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  if (flags.keep !== undefined) await Deno.copyFile(capture, flags.keep);

  const deno = Deno.execPath();
  const tools: { name: string; argv: string[]; check: (t: Timed) => string }[] = [
    {
      name: "netbird-ct replay",
      argv: [
        deno,
        "run",
        "-A",
        "main.ts",
        "replay",
        "-n",
        NETWORK,
        "-a",
        OWN,
        "-o",
        "/dev/null",
        capture,
      ],
      check: (t) => {
        const summary = t.stderr.trim().split("\n").find((l) => l.startsWith("Replayed:")) ?? "";
        const tracked = Number(/ tracked=(\d+)/.exec(summary)?.[1]);
        if (tracked !== PACKETS) throw new Error(`replay tracked ${tracked}: ${summary}`);
        return summary.replace(/^Replayed: /, "");
      },
    },
    {
      name: "tshark -z conv,tcp",
      argv: ["tshark", "-q", "-r", capture, "-z", "conv,tcp"],
      check: (t) => {
        const conversations = t.stdout.split("\n").filter((l) => l.includes("<->")).length;
        return `tcp conversations=${conversations}`;
      },
    },
  ];
  if (have("softflowd")) {
    tools.push({
      name: "softflowd -r",
      argv: ["softflowd", "-r", capture, "-n", "127.0.0.1:1"],
      check: () => "",
    });
  } else {
    console.log("softflowd not installed: skipped (apt-get install softflowd)");
  }
  // Warm Deno's module cache (transpiled files) so the first timed run does not pay for it.
  await new Deno.Command(deno, {
    args: ["run", "-A", "main.ts", "replay", "--help"],
    cwd: ROOT,
    stdout: "null",
  }).output();

  const results = new Map<string, Timed[]>(tools.map((t) => [t.name, []]));
  for (let run = 1; run <= RUNS; run++) {
    for (const tool of tools) {
      const t = await timed(tool.argv, dir);
      const note = tool.check(t);
      results.get(tool.name)!.push(t);
      console.log(
        `run ${run} ${tool.name.padEnd(18)} wall ${t.wall.toFixed(2)} s  cpu ${
          t.cpu.toFixed(2)
        } s  ` +
          `rss ${t.rssMiB.toFixed(0)} MiB  ${(PACKETS / t.wall / 1000).toFixed(0)} kpps  ${note}`,
      );
    }
  }
  console.log();
  console.log(
    `| tool | runs | packets/s (min/median/max) | wall s | CPU s | CPU µs/packet | peak RSS MiB |`,
  );
  console.log(`| --- | --- | --- | --- | --- | --- | --- |`);
  for (const tool of tools) {
    const ts = results.get(tool.name)!;
    console.log(
      `| ${tool.name} | ${ts.length} | ${triple(ts.map((t) => PACKETS / t.wall), 0)} | ` +
        `${triple(ts.map((t) => t.wall), 2)} | ${triple(ts.map((t) => t.cpu), 2)} | ` +
        `${triple(ts.map((t) => (t.cpu / PACKETS) * 1e6), 2)} | ` +
        `${triple(ts.map((t) => t.rssMiB), 0)} |`,
    );
  }
  const replayWall = median(results.get(tools[0]!.name)!.map((t) => t.wall));
  const replayCpu = median(results.get(tools[0]!.name)!.map((t) => t.cpu));
  for (const tool of tools.slice(1)) {
    const ts = results.get(tool.name)!;
    const wall = median(ts.map((t) => t.wall));
    const cpu = median(ts.map((t) => t.cpu));
    console.log(
      `RATIO replay/${tool.name}: packets/s ${(wall / replayWall).toFixed(2)}x, ` +
        `replay uses ${
          (replayCpu / cpu).toFixed(2)
        }x its CPU seconds (medians; packets/s > 1: replay faster)`,
    );
  }
} finally {
  cleanup();
}
