/**
 * Command-line parsing for `netbird-ct`. Pure: it never touches the system, so every usage error
 * is testable. Errors are {@linkcode UsageError}s whose message is one line naming the flag.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { formatIp, parseIp, Prefix } from "../net.ts";
import { type CliLogLevel, LOG_LEVELS } from "./logging.ts";
import { parseBytes, parseDuration } from "./units.ts";
import { parseCollector } from "../ipfix_export.ts";

/** A mistake on the command line: exit code 2, one line, no stack trace. */
export class UsageError extends Error {
  /** The error name, `"UsageError"`. */
  override name = "UsageError";
}

/** The default overlay when neither `--network` nor an interface gives one (NetBird's CGNAT). */
export const DEFAULT_NETWORK = "100.64.0.0/10";
/** The interface read when `--interface` is not given, if it exists. */
export const DEFAULT_INTERFACE = "wt0";

/** What the command line asked for. */
export interface CliOptions {
  /** `--help`. */
  help: boolean;
  /** `--version`. */
  version: boolean;
  /** `--network`, parsed. Empty: derive from the interface or use the default. */
  networks: Prefix[];
  /** `--address`, canonical text. Empty: derive from the interface. */
  addresses: string[];
  /** `--interface`, or `undefined` for "wt0 if it exists". */
  interface: string | undefined;
  /** `--counters`. */
  counters: boolean;
  /** `--output`: a path, or `-` for stdout. */
  output: string;
  /** `--log-level`. */
  logLevel: CliLogLevel;
  /** `--netns`: watch another `ip netns` namespace. */
  netns: string | undefined;
  /** `--rcvbuf`: requested netlink receive buffer in bytes (0 = kernel default). */
  rcvbuf: number;
  /** `--no-reliable-destroy` turns this off. */
  reliableDestroy: boolean;
  /** `--emit-existing`: start records for flows open at startup. */
  emitExisting: boolean;
  /** `--stats-interval` in ms; 0 = off. */
  statsIntervalMs: number;
  /** `--routes`: routes file for resource IDs. */
  routes: string | undefined;
  /** `--dns-collection`. */
  dnsCollection: boolean;
  /** `--dns-ports`. */
  dnsPorts: number[];
  /** `--exit-node-collection`. */
  exitNodeCollection: boolean;
  /** `--window` in ms, or `undefined` for one record per event. */
  windowMs: number | undefined;
  /** `--max-events`: aggregation store capacity. */
  maxEvents: number;
  /** `--active-timeout` in ms, or `undefined` for none. */
  activeTimeoutMs: number | undefined;
  /** `--flow-url`: the Flow API receiver (`https://` TLS, `http://` h2c), or `undefined`. */
  flowUrl: string | undefined;
  /** `--flow-token-file`: file holding `<signature>.<payload>` (else env `NB_FLOW_TOKEN`). */
  flowTokenFile: string | undefined;
  /** `--public-key`: the peer's WireGuard public key, 32 bytes. */
  publicKey: Uint8Array | undefined;
  /** `--unacked-max`: capacity of the un-acked event store. */
  unackedMax: number;
  /** `--store`: Redis URL for the un-acked events, or `undefined` for memory only. */
  store: string | undefined;
  /** `--ipfix`: collectors (`HOST:PORT`, `udp://…`, `tcp://…`). */
  ipfix: string[];
  /** `--ipfix-domain`: observation domain ID. */
  ipfixDomain: number;
  /** `--ipfix-counters`: biflow counter encoding. */
  ipfixCounters: "rfc5103" | "initiator";
  /** `--ipfix-mtu`: largest message in bytes. */
  ipfixMtu: number;
  /** `--ipfix-template-refresh`: template resend interval in ms (UDP). */
  ipfixTemplateRefreshMs: number;
  /** `--ipfix-queue`: records queued per collector before drops. */
  ipfixQueue: number;
  /** `--ipfix-sequence`: `rfc` counts all data records, `nfdump` only flow records. */
  ipfixSequence: "rfc" | "nfdump";
  /** `--nflog-group`: NFLOG group whose logged packets become `drop` records, or `undefined`. */
  nflogGroup: number | undefined;
  /**
   * `--source`: `conntrack` (kernel events, the default) or `nflog` (only the drop records of
   * `--nflog-group`). `--source packet` never reaches here: see {@linkcode packetSourceArgs}.
   */
  source: "conntrack" | "nflog";
}

/**
 * `--source packet --capture-interface IFACE [options]` is `netbird-ct capture -i IFACE
 * [options]`: returns the capture subcommand's arguments for it, or `undefined` when `--source
 * packet` is not given.
 *
 * @param args The command line.
 * @returns The arguments for `capture`, or `undefined`.
 */
export function packetSourceArgs(args: readonly string[]): string[] | undefined {
  let packet = false;
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") {
      out.push(...args.slice(i));
      break;
    }
    if (a === "--source=packet" || (a === "--source" && args[i + 1] === "packet")) {
      packet = true;
      if (a === "--source") i++;
    } else if (a === "--capture-interface") {
      out.push("-i");
    } else if (a.startsWith("--capture-interface=")) {
      out.push(`--interface=${a.slice("--capture-interface=".length)}`);
    } else {
      out.push(a);
    }
  }
  return packet ? out : undefined;
}

/** Default `--unacked-max`. */
export const DEFAULT_UNACKED_MAX = 100_000;
/** The window used with `--flow-url` when `--window` is not given (NetBird-like). */
export const DEFAULT_FLOW_WINDOW = "60s";
/** The environment variable holding the Flow API token when `--flow-token-file` is not given. */
export const FLOW_TOKEN_ENV = "NB_FLOW_TOKEN";

/** Default `--max-events`: about 64 MB of buffered records. */
export const DEFAULT_MAX_EVENTS = 100_000;

/** Default `--rcvbuf`: 64 MiB, room for about 100k queued events (the kernel doubles it). */
export const DEFAULT_RCVBUF = 64 * 1024 * 1024;
/** Default `--stats-interval`. */
export const DEFAULT_STATS_INTERVAL = "60s";

/** Help text for `netbird-ct --help`. */
export const HELP = `netbird-ct: NetBird-style traffic events from Linux conntrack

Usage: netbird-ct [options]
       netbird-ct --source nflog --nflog-group N [options]
                                      only drop records from NFLOG (no conntrack events)
       netbird-ct --source packet --capture-interface IFACE [options]
                                      the same as: netbird-ct capture -i IFACE [options]
       netbird-ct collect [options]   Flow API receiver (see netbird-ct collect --help)
       netbird-ct token [options]     mint a token for collect (see netbird-ct token --help)
       netbird-ct replay [options] FILE
                                      flows from a pcap/pcapng capture (see replay --help)
       netbird-ct capture -i IFACE [options]
                                      flows from live packets on IFACE (see capture --help)

Listens to the kernel's conntrack NEW and DESTROY events and writes one JSON line per event for
every connection that touches the overlay network: a "start" when the kernel creates the entry,
an "end" with the final counters when it destroys it. Start and end share a flow_id.

Options:
  -n, --network CIDR     overlay prefix, repeatable (IPv4 and/or IPv6)
                         default: the prefixes of --interface, else ${DEFAULT_NETWORK}
  -a, --address IP       this peer's overlay address, repeatable
                         default: the addresses of --interface
  -i, --interface NAME   WireGuard interface to read prefixes and addresses from
                         default: ${DEFAULT_INTERFACE} when it exists
      --counters         enable nf_conntrack_acct while running (byte/packet counters in
                         "end" records), restore the previous value on exit
  -o, --output PATH      JSON-lines destination, appended to; "-" = stdout   default: -
      --netns NAME       watch the network namespace NAME (as in "ip netns") instead of
                         the current one; give --network/--address explicitly with it
      --rcvbuf BYTES     netlink receive buffer (K/M/G suffixes; 0 = kernel default).
                         Each queued event takes ~1.3 KB; the kernel doubles the value.
                         default: 64M (about 100k events of headroom)
      --no-reliable-destroy
                         let the kernel drop DESTROY events when the buffer is full
                         (default: NETLINK_BROADCAST_ERROR on, DESTROY is never lost; a
                         stalled listener then holds dying entries in the kernel)
      --emit-existing    also write "start" records (reason "startup") for connections
                         already open when netbird-ct starts
      --stats-interval DURATION
                         log a stats line this often (e.g. 30s, 5m; 0 = off)   default: 60s
      --source SOURCE    conntrack: kernel conntrack events (+ NFLOG drops with
                         --nflog-group); nflog: only the drops of --nflog-group; packet:
                         live capture, see "netbird-ct capture --help"   default: conntrack
      --nflog-group N    also read packets the firewall logs to NFLOG group N (0-65535)
                         and write one "drop" record per packet, rule_id = the log prefix:
                         nft add rule inet filter input tcp dport 22 \\
                           log group N prefix "rule-ssh" drop
                         (needs libnetfilter_log, Debian: libnetfilter-log1)
      --log-level LEVEL  debug | info | warning | error (logs go to stderr)   default: info
  -h, --help             show this help
  -V, --version          print the version

Flow logger (NetBird's collection policy, resource IDs and aggregation):
      --routes FILE      resource IDs for routed (non-overlay) addresses, from JSON:
                         {"routes": [{"network": "192.0.2.0/24", "resource_id": "web"},
                                     {"network": "0.0.0.0/0", "resource_id": "exit"}],
                          "resolved": {"198.51.100.7": "api"}}
                         resolved addresses win, then the most specific route; a /0 match
                         is exit-node traffic. SIGHUP reloads it (a bad file keeps the old).
      --dns-collection   also log UDP flows to the DNS ports (default: not logged)
      --dns-ports LIST   UDP destination ports treated as DNS   default: 53,5353,22054
      --exit-node-collection
                         also log flows whose non-overlay end only matches a /0 route
      --window DURATION  aggregate per window (e.g. 10s): one record per (source, dest,
                         dest port, direction, protocol, ICMP type) with counter deltas and
                         window_start/window_end/num_of_starts/num_of_ends/num_of_drops
      --max-events N     records held per window; a full window is closed early, nothing
                         is dropped   default: ${DEFAULT_MAX_EVENTS}
      --active-timeout DURATION
                         emit "update" records with counter deltas for flows open longer
                         than this (e.g. 60s); start + updates + end = the kernel's totals

Flow API (send the window records to a NetBird-style receiver, as NetBird's client):
      --flow-url URL     the receiver: https://HOST[:PORT] (TLS, system roots) or
                         http://HOST[:PORT] (h2c, token in cleartext). Window records go
                         on one /flow.FlowService/Events stream and are resent until
                         acked; -o still gets them (use -o /dev/null to only send).
                         Without --window the window is ${DEFAULT_FLOW_WINDOW}
      --public-key KEY   this peer's WireGuard public key (base64, 32 bytes); needed
                         with --flow-url
      --flow-token-file FILE
                         file holding the token "<signature>.<payload>" (sent as
                         "authorization: Bearer <signature>.<payload>"); without it the
                         token comes from env ${FLOW_TOKEN_ENV}. Never given as a flag
      --unacked-max N    events kept until acked; when full the oldest is dropped and
                         counted (flow_overflow_drops)   default: ${DEFAULT_UNACKED_MAX}
      --store URL        keep un-acked events in Redis (redis://HOST[:PORT][/DB], or
                         rediss:// for TLS) so they survive a restart and are resent;
                         default: memory only. On SIGINT netbird-ct flushes the last
                         window and waits up to 2s for acks; the rest stays in the store
                         and the exit summary counts it (flow_unacked)

IPFIX export (RFC 7011 biflow records of ended flows and interim updates):
      --ipfix COLLECTOR  export to HOST:PORT (UDP), udp://HOST:PORT or tcp://HOST:PORT;
                         repeatable (several collectors); [v6]:PORT for IPv6 addresses
      --ipfix-domain ID  observation domain ID                              default: 0
      --ipfix-counters rfc5103|initiator
                         reverse elements of RFC 5103 (nfdump, goflow2) or
                         initiator/responder elements 231/232/298/299      default: rfc5103
      --ipfix-mtu BYTES  largest message                                   default: 1400
      --ipfix-template-refresh DURATION
                         resend templates this often over UDP (also every 100 messages
                         and on every TCP connect)                          default: 60s
      --ipfix-queue N    records queued per collector; a slow or absent collector never
                         blocks the tracker, overflow is counted          default: 65536
      --ipfix-sequence rfc|nfdump
                         sequence numbers count every data record (RFC 7011) or only
                         flow records (what nfcapd checks)                default: rfc

Which connections are reported (NetBird's rules):
  a connection mark in 0x1BD10-0x1BDFF (set by NetBird's firewall), or a source or
  destination inside an overlay prefix. Direction: mark 0x1BD10 = ingress, 0x1BD11 = egress;
  else own address as source = egress, as destination = ingress, overlay source = ingress
  (routed from a peer), overlay destination = egress, anything else = unknown.

Output (one object per line; counters are this host's rx/tx):
  event_id timestamp flow_id type direction protocol source_ip dest_ip source_port dest_port
  icmp_type icmp_code rx_packets tx_packets rx_bytes tx_bytes conntrack_id
  source_resource_id dest_resource_id rule_id, and "reason" ("resync" | "startup") on
  records netbird-ct synthesized.

Lost events: when the kernel overruns the socket buffer, netbird-ct keeps reading, counts the
overrun and the kernel's exact drop count, dumps the conntrack table and reconciles: flows it
never saw start get a synthesized "start", flows gone without a DESTROY a synthesized "end"
with their last known counters. The stats line and the exit summary show every count.

Examples:
  netbird-ct                                   # wt0's overlay, records to stdout
  netbird-ct -n 100.64.0.0/10 -a 100.64.0.7 --counters -o /var/log/netbird-ct.jsonl
  netbird-ct --counters --window 60s -o /dev/null --flow-url https://flow.example.com \\
    --public-key "$(wg show wt0 public-key)" --flow-token-file /etc/netbird-ct/flow.token \\
    --store redis://127.0.0.1:6379/0            # to a receiver; un-acked kept in Redis

Needs root or CAP_NET_ADMIN, and libnetfilter_conntrack (Debian: libnetfilter-conntrack3).
Exit status: 0 after a normal stop (SIGINT/SIGTERM included), 1 on a runtime failure,
2 on a usage error.`;

function fail(message: string): never {
  throw new UsageError(message);
}

/**
 * Parses the command line.
 *
 * @param args Arguments without the program name.
 * @returns The options.
 * @throws {UsageError} With a one-line message naming the flag.
 *
 * @example Usage
 * ```ts
 * import { parseCli } from "./args.ts";
 * const o = parseCli(["-n", "100.64.0.0/16", "--counters"]);
 * if (!o.counters || o.networks.length !== 1) throw new Error("parse failed");
 * ```
 */
export function parseCli(args: string[]): CliOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        network: { type: "string", short: "n", multiple: true },
        address: { type: "string", short: "a", multiple: true },
        interface: { type: "string", short: "i" },
        counters: { type: "boolean" },
        output: { type: "string", short: "o" },
        "log-level": { type: "string" },
        netns: { type: "string" },
        rcvbuf: { type: "string" },
        "no-reliable-destroy": { type: "boolean" },
        "emit-existing": { type: "boolean" },
        "stats-interval": { type: "string" },
        routes: { type: "string" },
        "dns-collection": { type: "boolean" },
        "dns-ports": { type: "string" },
        "exit-node-collection": { type: "boolean" },
        window: { type: "string" },
        "max-events": { type: "string" },
        "active-timeout": { type: "string" },
        "flow-url": { type: "string" },
        "flow-token-file": { type: "string" },
        "public-key": { type: "string" },
        "unacked-max": { type: "string" },
        ipfix: { type: "string", multiple: true },
        "ipfix-domain": { type: "string" },
        "ipfix-counters": { type: "string" },
        "ipfix-mtu": { type: "string" },
        "ipfix-template-refresh": { type: "string" },
        "ipfix-queue": { type: "string" },
        "ipfix-sequence": { type: "string" },
        store: { type: "string" },
        "nflog-group": { type: "string" },
        source: { type: "string" },
        "capture-interface": { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
  } catch (err) {
    fail(parseArgsMessage(err));
  }
  const v = parsed.values;
  const networks = (v.network ?? []).map((text) => {
    try {
      return Prefix.parse(text);
    } catch {
      return fail(
        `invalid --network "${text}": expected a prefix such as 100.64.0.0/10 or fd00::/8`,
      );
    }
  });
  const addresses = (v.address ?? []).map((text) => {
    const bytes = parseIp(text);
    if (bytes === undefined) {
      return fail(`invalid --address "${text}": expected an IP address such as 100.64.0.1`);
    }
    return formatIp(bytes);
  });
  const level = v["log-level"] ?? "info";
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    fail(`invalid --log-level "${level}": expected one of ${LOG_LEVELS.join(", ")}`);
  }
  const iface = v.interface;
  if (iface !== undefined && !/^[^\s/]{1,15}$/.test(iface)) {
    fail(`invalid --interface "${iface}": expected an interface name of 1-15 characters`);
  }
  const netns = v.netns;
  if (netns !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(netns)) {
    fail(`invalid --netns "${netns}": expected a name as shown by "ip netns list"`);
  }
  const rcvbufText = v.rcvbuf ?? String(DEFAULT_RCVBUF);
  const rcvbuf = parseBytes(rcvbufText);
  if (rcvbuf === undefined || rcvbuf > 2 ** 31 - 1) {
    fail(`invalid --rcvbuf "${rcvbufText}": expected bytes such as 212992 or 64M (at most 2G)`);
  }
  const statsText = v["stats-interval"] ?? DEFAULT_STATS_INTERVAL;
  const statsIntervalMs = parseDuration(statsText);
  if (statsIntervalMs === undefined || (statsIntervalMs > 0 && statsIntervalMs < 100)) {
    fail(`invalid --stats-interval "${statsText}": expected a duration such as 60s or 5m, or 0`);
  }
  const dnsPortsText = v["dns-ports"] ?? "53,5353,22054";
  const dnsPorts = dnsPortsText.split(",").map((p) => p.trim());
  if (!dnsPorts.every((p) => /^[0-9]{1,5}$/.test(p) && Number(p) <= 65535)) {
    fail(`invalid --dns-ports "${dnsPortsText}": expected ports such as 53,5353`);
  }
  const optionalDuration = (flag: string, text: string | undefined): number | undefined => {
    if (text === undefined) return undefined;
    const ms = parseDuration(text);
    if (ms === undefined || ms < 1000) {
      fail(`invalid --${flag} "${text}": expected a duration of at least 1s, such as 10s or 1m`);
    }
    return ms;
  };
  const flowUrl = v["flow-url"];
  if (flowUrl !== undefined) {
    const problem = flowUrlProblem(flowUrl);
    if (problem !== undefined) fail(`invalid --flow-url "${flowUrl}": ${problem}`);
  }
  const windowMs = optionalDuration(
    "window",
    v.window ?? (flowUrl === undefined ? undefined : DEFAULT_FLOW_WINDOW),
  );
  const flow = parseFlowOptions(v, flowUrl);
  const activeTimeoutMs = optionalDuration("active-timeout", v["active-timeout"]);
  const maxEventsText = v["max-events"] ?? String(DEFAULT_MAX_EVENTS);
  if (!/^[1-9][0-9]{0,8}$/.test(maxEventsText)) {
    fail(`invalid --max-events "${maxEventsText}": expected a whole number from 1`);
  }
  if (v.routes === "") fail(`invalid --routes "": expected a file path`);
  const ipfix = parseIpfixOptions(v);
  const output = v.output ?? "-";
  if (output === "") fail(`invalid --output "": expected a path or "-"`);
  const nflogText = v["nflog-group"];
  if (nflogText !== undefined && (!/^[0-9]{1,5}$/.test(nflogText) || Number(nflogText) > 65535)) {
    fail(`invalid --nflog-group "${nflogText}": expected a group number from 0 to 65535`);
  }
  const source = v.source ?? "conntrack";
  if (source !== "conntrack" && source !== "nflog") {
    fail(`invalid --source "${source}": expected conntrack, nflog or packet`);
  }
  if (v["capture-interface"] !== undefined) fail("--capture-interface needs --source packet");
  if (source === "nflog" && nflogText === undefined) {
    fail("--source nflog needs --nflog-group N");
  }
  return {
    help: v.help ?? false,
    version: v.version ?? false,
    source,
    networks,
    addresses,
    interface: iface,
    counters: v.counters ?? false,
    output,
    logLevel: level as CliLogLevel,
    netns,
    rcvbuf,
    reliableDestroy: !(v["no-reliable-destroy"] ?? false),
    emitExisting: v["emit-existing"] ?? false,
    statsIntervalMs,
    routes: v.routes,
    dnsCollection: v["dns-collection"] ?? false,
    dnsPorts: dnsPorts.map(Number),
    exitNodeCollection: v["exit-node-collection"] ?? false,
    windowMs,
    maxEvents: Number(maxEventsText),
    activeTimeoutMs,
    flowUrl,
    ...flow,
    ...ipfix,
    nflogGroup: nflogText === undefined ? undefined : Number(nflogText),
  };
}

function parseIpfixOptions(v: Record<string, string | boolean | string[] | undefined>): Pick<
  CliOptions,
  | "ipfix"
  | "ipfixDomain"
  | "ipfixCounters"
  | "ipfixMtu"
  | "ipfixTemplateRefreshMs"
  | "ipfixQueue"
  | "ipfixSequence"
> {
  const text = (flag: string): string | undefined => v[flag] as string | undefined;
  const collectors = (v.ipfix as string[] | undefined) ?? [];
  for (const c of collectors) {
    try {
      parseCollector(c);
    } catch (err) {
      fail(`invalid --ipfix "${c}": ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  const whole = (flag: string, fallback: number, min: number, max: number): number => {
    const t = text(flag);
    if (t === undefined) return fallback;
    if (!/^[0-9]{1,10}$/.test(t) || Number(t) < min || Number(t) > max) {
      fail(`invalid --${flag} "${t}": expected a whole number from ${min} to ${max}`);
    }
    return Number(t);
  };
  const counters = text("ipfix-counters") ?? "rfc5103";
  if (counters !== "rfc5103" && counters !== "initiator") {
    fail(`invalid --ipfix-counters "${counters}": expected rfc5103 or initiator`);
  }
  const sequence = text("ipfix-sequence") ?? "rfc";
  if (sequence !== "rfc" && sequence !== "nfdump") {
    fail(`invalid --ipfix-sequence "${sequence}": expected rfc or nfdump`);
  }
  const refreshText = text("ipfix-template-refresh") ?? "60s";
  const refresh = parseDuration(refreshText);
  if (refresh === undefined || refresh < 1000) {
    fail(`invalid --ipfix-template-refresh "${refreshText}": expected a duration from 1s`);
  }
  return {
    ipfix: collectors,
    ipfixDomain: whole("ipfix-domain", 0, 0, 2 ** 32 - 1),
    ipfixCounters: counters,
    ipfixMtu: whole("ipfix-mtu", 1400, 256, 65_535),
    ipfixTemplateRefreshMs: refresh,
    ipfixQueue: whole("ipfix-queue", 65_536, 1, 100_000_000),
    ipfixSequence: sequence,
  };
}

function flowUrlProblem(text: string): string | undefined {
  const expected = "expected https://HOST[:PORT] or http://HOST[:PORT]";
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return expected;
  }
  if (
    (u.protocol !== "https:" && u.protocol !== "http:") || u.hostname === "" ||
    u.username !== "" || u.password !== "" || u.search !== "" || u.hash !== ""
  ) {
    return expected;
  }
  if (u.protocol === "https:" && parseIp(u.hostname.replace(/^\[|\]$/g, "")) !== undefined) {
    return "https:// needs a host name (the TLS server name), not an IP address";
  }
  return undefined;
}

function parseFlowOptions(
  v: Record<string, string | boolean | (string | boolean)[] | undefined>,
  flowUrl: string | undefined,
): Pick<CliOptions, "flowTokenFile" | "publicKey" | "unackedMax" | "store"> {
  const text = (name: string): string | undefined => {
    const value = v[name];
    return typeof value === "string" ? value : undefined;
  };
  if (flowUrl === undefined) {
    for (const flag of ["public-key", "flow-token-file", "unacked-max", "store"]) {
      if (text(flag) !== undefined) fail(`--${flag} needs --flow-url`);
    }
  }
  const keyText = text("public-key");
  let publicKey: Uint8Array | undefined;
  if (keyText !== undefined) {
    publicKey = decodeKey(keyText);
    if (publicKey === undefined) {
      fail(
        `invalid --public-key "${keyText}": expected a WireGuard public key (base64 of 32 bytes)`,
      );
    }
  } else if (flowUrl !== undefined) {
    fail("--flow-url needs --public-key (this peer's WireGuard public key)");
  }
  const tokenFile = text("flow-token-file");
  if (tokenFile === "") fail(`invalid --flow-token-file "": expected a file path`);
  const maxText = text("unacked-max") ?? String(DEFAULT_UNACKED_MAX);
  if (!/^[1-9][0-9]{0,8}$/.test(maxText)) {
    fail(`invalid --unacked-max "${maxText}": expected a whole number from 1`);
  }
  const store = text("store");
  if (store !== undefined && !validRedisUrl(store)) {
    fail(`invalid --store "${store}": expected redis://HOST[:PORT][/DB]`);
  }
  return { flowTokenFile: tokenFile, publicKey, unackedMax: Number(maxText), store };
}

function decodeKey(text: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9+/]{43}=$/.test(text)) return undefined;
  const bin = atob(text);
  if (bin.length !== 32) return undefined;
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function validRedisUrl(text: string): boolean {
  try {
    const u = new URL(text);
    return (u.protocol === "redis:" || u.protocol === "rediss:") && u.hostname !== "" &&
      /^(\/([0-9]{1,5})?)?$/.test(u.pathname) && u.search === "" && u.hash === "";
  } catch {
    return false;
  }
}

/**
 * Picks and checks the Flow API token: the `--flow-token-file` contents (trimmed) when the flag
 * is given, else env `NB_FLOW_TOKEN`. Pure: the caller reads the file and the environment.
 *
 * @param options Parsed options (`flowTokenFile`).
 * @param fileText The token file's contents, when `--flow-token-file` is given.
 * @param envToken The value of `NB_FLOW_TOKEN`, if set.
 * @returns The token, `<signature>.<payload>`.
 * @throws {UsageError} When there is no token or it is not `<signature>.<payload>`.
 *
 * @example Usage
 * ```ts
 * import { flowToken, parseCli } from "./args.ts";
 * const o = parseCli([
 *   "--flow-url", "http://127.0.0.1:8080",
 *   "--public-key", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
 * ]);
 * if (flowToken(o, undefined, "c2ln.1767225600") !== "c2ln.1767225600") throw new Error("env");
 * ```
 */
export function flowToken(
  options: Pick<CliOptions, "flowTokenFile">,
  fileText: string | undefined,
  envToken: string | undefined,
): string {
  const file = options.flowTokenFile;
  const where = file === undefined ? `env ${FLOW_TOKEN_ENV}` : `--flow-token-file "${file}"`;
  const token = (file === undefined ? envToken : fileText)?.trim() ?? "";
  if (token === "") {
    if (file !== undefined) fail(`invalid --flow-token-file "${file}": the file is empty`);
    fail(`--flow-url needs a token: --flow-token-file FILE or env ${FLOW_TOKEN_ENV}`);
  }
  // Printable ASCII without spaces (it goes into an HTTP header), with a "." between two parts.
  if (!/^[\x21-\x7e]+$/.test(token) || !/^[^.]+\..+$/.test(token)) {
    fail(`invalid token in ${where}: expected "<signature>.<payload>" without spaces`);
  }
  return token;
}

/**
 * Checks `--log-level`, `--network` and `--address` values of a subcommand (replay, capture).
 *
 * @param level The `--log-level` value.
 * @param networks The `--network` values.
 * @param addresses The `--address` values.
 * @returns The log level.
 * @throws {UsageError} With a one-line message naming the flag and the value.
 */
export function checkOverlayFlags(
  level: string,
  networks: readonly string[],
  addresses: readonly string[],
): CliLogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    fail(`invalid --log-level "${level}": expected one of ${LOG_LEVELS.join(", ")}`);
  }
  for (const n of networks) {
    let ok = n !== "";
    try {
      if (ok) Prefix.parse(n);
    } catch {
      ok = false;
    }
    if (!ok) fail(`invalid --network "${n}": expected a prefix such as 100.64.0.0/10`);
  }
  for (const a of addresses) {
    if (parseIp(a) === undefined) {
      fail(`invalid --address "${a}": expected an IPv4 or IPv6 address such as 100.64.0.1`);
    }
  }
  return level as CliLogLevel;
}

/**
 * Turns an error from `node:util` `parseArgs` into a one-line usage message naming the option.
 *
 * @param err The error `parseArgs` threw.
 * @returns The message, without a "netbird-ct:" prefix.
 */
export function parseArgsMessage(err: unknown): string {
  const code = (err as { code?: string }).code;
  const message = err instanceof Error ? err.message : String(err);
  const option = /'([^']+)'/.exec(message)?.[1];
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown option "${option ?? message}"`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      // "ambiguous": the next argument starts with "-" (another option, or a value such as -1).
      if (message.includes("ambiguous")) {
        return `option "${option ?? "?"}" needs a value (write ${
          option ?? "--option"
        }=VALUE for one starting with "-")`;
      }
      return `option "${option ?? "?"}" ${
        message.includes("argument missing") ? "needs a value" : "takes no value"
      }`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `unexpected argument "${option ?? message}": options only`;
    default:
      return message.split("\n")[0] ?? message;
  }
}

/** One address of a network interface, as `Deno.networkInterfaces()` reports it. */
export interface InterfaceAddress {
  /** Interface name. */
  name: string;
  /** Address text. */
  address: string;
  /** `ADDRESS/BITS`. */
  cidr: string;
}

/** The overlay the tracker will use, after defaults are applied. */
export interface ResolvedOverlay {
  /** Prefixes. */
  networks: Prefix[];
  /** Own addresses. */
  addresses: string[];
  /** Where the values came from, for the startup log line. */
  origin: string;
}

/**
 * Applies the defaults: explicit flags win; otherwise prefixes and addresses come from the
 * interface (`--interface`, else wt0 if present); otherwise the prefix is 100.64.0.0/10.
 *
 * @param options Parsed options.
 * @param interfaces The host's interface addresses.
 * @returns The overlay to use.
 * @throws {UsageError} When `--interface` names an interface without addresses.
 */
export function resolveOverlay(
  options: CliOptions,
  interfaces: readonly InterfaceAddress[],
): ResolvedOverlay {
  const name = options.interface ?? DEFAULT_INTERFACE;
  const own = interfaces.filter((i) => i.name === name && !i.address.startsWith("fe80:"));
  if (options.interface !== undefined && own.length === 0) {
    fail(`invalid --interface "${options.interface}": no such interface with an address`);
  }
  const fromIface = own.length > 0 && options.netns === undefined;
  const networks = options.networks.length > 0
    ? options.networks
    : fromIface
    ? own.map((i) => Prefix.parse(i.cidr))
    : [Prefix.parse(DEFAULT_NETWORK)];
  const addresses = options.addresses.length > 0
    ? options.addresses
    : fromIface
    ? own.map((i) => formatIp(parseIp(i.address)!))
    : [];
  const origin = options.networks.length > 0
    ? "--network"
    : fromIface
    ? `interface ${name}`
    : "default";
  return { networks, addresses, origin };
}
