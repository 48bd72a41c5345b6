/**
 * The `netbird-ct collect` and `netbird-ct token` subcommands: a receiver for NetBird's Flow API
 * (what NetBird peers, or `netbird-ct` itself, send flow events to) with a query API, and the
 * tokens its senders need.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { getLogger } from "@logtape/logtape";
import { parseIp } from "../net.ts";
import { FlowReceiver, formatReceiverStats, type ListenAddress } from "../flowapi/server.ts";
import {
  type EventStore,
  MemoryEventStore,
  redactRedisUrl,
  RedisEventStore,
} from "../flowapi/store.ts";
import { QUERY_PATH } from "../flowapi/query.ts";
import { MIN_SECRET_BYTES, mintToken } from "../flowapi/token.ts";
import { parseArgsMessage, UsageError } from "./args.ts";
import { type CliLogLevel, LOG_LEVELS, setupLogging, teardownLogging } from "./logging.ts";
import { parseDuration } from "./units.ts";

const log = getLogger(["netbird-ct", "collect"]);
const encoder = new TextEncoder();

/** Default `--listen` (gRPC). */
export const DEFAULT_LISTEN = "127.0.0.1:8080";
/** Default `--http-listen` (query API). */
export const DEFAULT_HTTP_LISTEN = "127.0.0.1:8081";
/** Default `token --ttl`. */
export const DEFAULT_TTL = "24h";

/** Help text for `netbird-ct collect --help`. */
export const COLLECT_HELP: string =
  `netbird-ct collect: receive NetBird flow events, store them, answer queries

Usage: netbird-ct collect --token-secret-file FILE [options]

Serves NetBird's Flow API, gRPC /flow.FlowService/Events, the way NetBird's closed-source
receiver does: on each stream it first sends FlowEventAck{isInitiator: true}, then stores every
FlowEvent and acks it (FlowEventAck{event_id}) only once it is stored. An event that cannot be
stored is not acked, so the sender keeps it and resends it; a resent event is stored once (by
event_id) and acked again. Senders: NetBird peers (flow URL = this address) or netbird-ct.

Options:
      --token-secret-file FILE
                         HMAC secret of the senders' tokens (required; at least ${MIN_SECRET_BYTES}
                         bytes; trailing newlines are ignored). Make one with:
                         openssl rand -base64 32 > secret && chmod 600 secret
      --listen ADDR:PORT gRPC address ([::1]:8080 for IPv6; port 0 = any)
                         default: ${DEFAULT_LISTEN}
      --tls-cert FILE    serve gRPC over TLS with this PEM certificate chain ...
      --tls-key FILE     ... and this PEM private key (both or neither; default: h2c,
                         plaintext HTTP/2 - NetBird uses TLS only for https:// flow URLs)
      --store STORE      memory (default; lost on exit) or redis://[USER:PASS@]HOST:PORT/DB
                         (survives restarts; keys under netbird-ct:flow:)
      --http-listen ADDR:PORT
                         query API address (no authentication: keep it on loopback or
                         behind a proxy)   default: ${DEFAULT_HTTP_LISTEN}
      --stats-interval DURATION
                         log a stats line this often (e.g. 30s; 0 = off)   default: 60s
      --log-level LEVEL  debug | info | warning | error (logs go to stderr)   default: info
  -h, --help             show this help

Authentication: every stream must carry the metadata
  authorization: Bearer <signature>.<payload>
where payload is the expiry time in Unix seconds and signature the base64 HMAC-SHA256 of the
payload with the secret (NetBird's TimedHMAC). Make one with: netbird-ct token --ttl 24h
--token-secret-file FILE. A missing, malformed, expired or forged token ends the stream with
UNAUTHENTICATED (16); a stream is also ended when its token expires.

Query API: GET http://ADDR:PORT${QUERY_PATH} with NetBird's parameters
  page (default 1)  page_size (default 1000, at most 50000)  reporter_id (base64 public key)
  protocol (number, or tcp/udp/icmp/icmpv6/sctp)  type (start|end|drop|unknown)
  direction (ingress|egress|unknown)  search (substring of addresses, resource IDs, reporter)
  start_date, end_date (RFC 3339, inclusive)
Answer: {"data": [events, newest first], "page", "page_size", "total_records", "total_pages"};
a bad parameter gets 400 {"message": "..."}, an unreachable store 503. Each event: event_id
timestamp reporter_id flow_id type direction protocol source_ip dest_ip source_port dest_port
icmp_type icmp_code rx_packets tx_packets rx_bytes tx_bytes rule_id source_resource_id
dest_resource_id num_of_starts num_of_ends num_of_drops window_start window_end (counters are
exact JSON integers up to 2^64-1; absent values are null).
  curl -s 'http://127.0.0.1:8081${QUERY_PATH}?type=end&protocol=tcp&page_size=10'

Redis: one JSON string per event (netbird-ct:flow:event:<event_id>, written with SET NX) and a
sorted set by event time in ms (netbird-ct:flow:by_time). While Redis is down, events are not
acked (the senders resend them), queries get 503, and the receiver reconnects by itself.

Stopping (SIGINT/SIGTERM): new streams are refused, reading stops, events being stored are
finished and acked, streams end with UNAVAILABLE (senders reconnect elsewhere or later), then
the store is closed and a summary is logged. A second signal exits at once (no acked event is
lost: an event is acked only after it is stored).

Exit status: 0 after a normal stop, 1 on a runtime failure (cannot listen, cannot reach Redis
at startup), 2 on a usage error. Permissions under deno run: --allow-net --allow-read.`;

/** Help text for `netbird-ct token --help`. */
export const TOKEN_HELP: string = `netbird-ct token: make a token for senders of flow events

Usage: netbird-ct token --token-secret-file FILE [--ttl DURATION]

Prints one line, <signature>.<payload>, to stdout (and its expiry time to stderr). Senders put
it in the metadata "authorization: Bearer <token>" of their Flow API streams; in NetBird's
FlowConfig the payload is tokenPayload and the signature tokenSignature.
payload = expiry time in Unix seconds, signature = base64(HMAC-SHA256(secret, payload)).

Options:
      --token-secret-file FILE
                         the secret "netbird-ct collect" checks tokens with (required)
      --ttl DURATION     how long the token is valid (e.g. 1h, 30m, 24h; at least 1s)
                         default: ${DEFAULT_TTL}
  -h, --help             show this help

Example:
  TOKEN=$(netbird-ct token --ttl 24h --token-secret-file /etc/netbird-ct/secret)

Exit status: 0 on success, 1 when the secret file cannot be read, 2 on a usage error.`;

/** Where `collect` keeps events. */
export type StoreSpec = { kind: "memory" } | { kind: "redis"; url: string };

/** What `netbird-ct collect` was asked to do. */
export interface CollectOptions {
  /** `--help`. */
  help: boolean;
  /** `--listen`. */
  listen: ListenAddress;
  /** `--http-listen`. */
  httpListen: ListenAddress;
  /** `--tls-cert` and `--tls-key`, both or neither. */
  tls: { certFile: string; keyFile: string } | undefined;
  /** `--token-secret-file` (empty only with `--help`). */
  tokenSecretFile: string;
  /** `--store`. */
  store: StoreSpec;
  /** `--stats-interval` in ms; 0 = off. */
  statsIntervalMs: number;
  /** `--log-level`. */
  logLevel: CliLogLevel;
}

/** What `netbird-ct token` was asked to do. */
export interface TokenOptions {
  /** `--help`. */
  help: boolean;
  /** `--token-secret-file` (empty only with `--help`). */
  tokenSecretFile: string;
  /** `--ttl` in ms. */
  ttlMs: number;
}

function fail(message: string): never {
  throw new UsageError(message);
}

/**
 * Parses `ADDR:PORT` (`[IPv6]:PORT` for IPv6 addresses).
 *
 * @param flag The flag, for the error message.
 * @param text The value.
 * @returns The address.
 * @throws {UsageError} When `text` is not an address and port.
 */
export function parseListen(flag: string, text: string): ListenAddress {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):([0-9]{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  const host = m?.[1] ?? m?.[2] ?? "";
  const ipv6 = m?.[1] !== undefined;
  const validHost = ipv6
    ? parseIp(host)?.length === 16
    : /^[0-9.]+$/.test(host)
    ? parseIp(host)?.length === 4
    : /^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(host);
  if (m === null || !validHost || port > 65535) {
    fail(`invalid ${flag} "${text}": expected ADDRESS:PORT such as 127.0.0.1:8080 or [::1]:8080`);
  }
  return { hostname: host, port };
}

/**
 * Parses `--store`: `memory`, or a `redis://` / `rediss://` URL with an optional database number.
 *
 * @param text The value.
 * @returns The store to open.
 * @throws {UsageError} When `text` is neither.
 */
export function parseStore(text: string): StoreSpec {
  if (text === "memory") return { kind: "memory" };
  const bad = (why: string): never => fail(`invalid --store "${redactRedisUrl(text)}": ${why}`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return bad("expected memory or redis://HOST:PORT/DB");
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
    return bad("expected memory or redis://HOST:PORT/DB");
  }
  if (url.hostname === "") bad("no host");
  if (url.search !== "" || url.hash !== "") bad("no query or fragment allowed");
  if (!/^(\/([0-9]{1,5})?)?$/.test(url.pathname)) bad("the path must be a database number");
  return { kind: "redis", url: text };
}

/**
 * Parses the arguments of `netbird-ct collect`.
 *
 * @param args Arguments after `collect`.
 * @returns The options.
 * @throws {UsageError} With a one-line message naming the flag.
 *
 * @example Usage
 * ```ts
 * import { parseCollectArgs } from "./collect.ts";
 * const o = parseCollectArgs(["--token-secret-file", "s", "--store", "redis://127.0.0.1:6379/2"]);
 * if (o.store.kind !== "redis" || o.listen.port !== 8080) throw new Error("parse failed");
 * ```
 */
export function parseCollectArgs(args: string[]): CollectOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        listen: { type: "string" },
        "http-listen": { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "token-secret-file": { type: "string" },
        store: { type: "string" },
        "stats-interval": { type: "string" },
        "log-level": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    fail(parseArgsMessage(err));
  }
  const v = parsed.values;
  const help = v.help ?? false;
  const listen = parseListen("--listen", v.listen ?? DEFAULT_LISTEN);
  const httpListen = parseListen("--http-listen", v["http-listen"] ?? DEFAULT_HTTP_LISTEN);
  const cert = v["tls-cert"];
  const key = v["tls-key"];
  if ((cert === undefined) !== (key === undefined)) {
    fail(cert === undefined ? "--tls-key needs --tls-cert" : "--tls-cert needs --tls-key");
  }
  if (cert === "" || key === "") {
    fail(`invalid --tls-${cert === "" ? "cert" : "key"} "": expected a file`);
  }
  const secretFile = v["token-secret-file"];
  if (!help && (secretFile === undefined || secretFile === "")) {
    fail(
      "missing --token-secret-file: senders authenticate with tokens made from it " +
        "(create one with: openssl rand -base64 32 > secret)",
    );
  }
  const statsText = v["stats-interval"] ?? "60s";
  const statsIntervalMs = parseDuration(statsText);
  if (statsIntervalMs === undefined || (statsIntervalMs > 0 && statsIntervalMs < 100)) {
    fail(`invalid --stats-interval "${statsText}": expected a duration such as 60s or 5m, or 0`);
  }
  const level = v["log-level"] ?? "info";
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    fail(`invalid --log-level "${level}": expected one of ${LOG_LEVELS.join(", ")}`);
  }
  return {
    help,
    listen,
    httpListen,
    tls: cert === undefined || key === undefined ? undefined : { certFile: cert, keyFile: key },
    tokenSecretFile: secretFile ?? "",
    store: parseStore(v.store ?? "memory"),
    statsIntervalMs,
    logLevel: level as CliLogLevel,
  };
}

/**
 * Parses the arguments of `netbird-ct token`.
 *
 * @param args Arguments after `token`.
 * @returns The options.
 * @throws {UsageError} With a one-line message naming the flag.
 *
 * @example Usage
 * ```ts
 * import { parseTokenArgs } from "./collect.ts";
 * const o = parseTokenArgs(["--ttl", "1h", "--token-secret-file", "secret"]);
 * if (o.ttlMs !== 3_600_000) throw new Error("parse failed");
 * ```
 */
export function parseTokenArgs(args: string[]): TokenOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        ttl: { type: "string" },
        "token-secret-file": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    fail(parseArgsMessage(err));
  }
  const v = parsed.values;
  const help = v.help ?? false;
  const ttlText = v.ttl ?? DEFAULT_TTL;
  const ttlMs = parseDuration(ttlText);
  if (ttlMs === undefined || ttlMs < 1000 || ttlMs > 10 * 365 * 86_400_000) {
    fail(`invalid --ttl "${ttlText}": expected a duration from 1s to 87600h, such as 24h`);
  }
  const secretFile = v["token-secret-file"];
  if (!help && (secretFile === undefined || secretFile === "")) {
    fail("missing --token-secret-file: the secret netbird-ct collect checks tokens with");
  }
  return { help, tokenSecretFile: secretFile ?? "", ttlMs };
}

/**
 * Reads a token secret: the file's bytes without trailing CR/LF.
 *
 * @param path The file.
 * @returns The secret.
 * @throws {UsageError} When the secret is shorter than {@linkcode MIN_SECRET_BYTES}.
 * @throws {Error} When the file cannot be read.
 */
export async function readTokenSecret(path: string): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    throw new Error(
      `Cannot read --token-secret-file "${path}": ${err instanceof Error ? err.message : err}`,
    );
  }
  let end = bytes.length;
  while (end > 0 && (bytes[end - 1] === 0x0a || bytes[end - 1] === 0x0d)) end--;
  if (end < MIN_SECRET_BYTES) {
    throw new UsageError(
      `invalid --token-secret-file "${path}": the secret has ${end} bytes, want at least ${MIN_SECRET_BYTES}`,
    );
  }
  return bytes.slice(0, end);
}

async function readText(flag: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    throw new Error(`Cannot read ${flag} "${path}": ${err instanceof Error ? err.message : err}`);
  }
}

function printLine(stream: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = encoder.encode(text + "\n");
  while (bytes.length > 0) bytes = bytes.subarray(stream.writeSync(bytes));
}

function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || hostname.startsWith("127.");
}

function displayAddress(a: ListenAddress): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

async function collect(options: CollectOptions): Promise<number> {
  const secret = await readTokenSecret(options.tokenSecretFile);
  try {
    const mode = (await Deno.stat(options.tokenSecretFile)).mode;
    if (mode !== null && (mode & 0o077) !== 0) {
      log.warning("--token-secret-file {path} is readable by other users (mode {mode})", {
        path: options.tokenSecretFile,
        mode: (mode & 0o777).toString(8),
      });
    }
  } catch { /* the read above succeeded; the mode is only advice */ }
  const tls = options.tls === undefined ? undefined : {
    cert: await readText("--tls-cert", options.tls.certFile),
    key: await readText("--tls-key", options.tls.keyFile),
  };
  const spec = options.store;
  const store: EventStore = spec.kind === "memory"
    ? new MemoryEventStore()
    : await RedisEventStore.open(spec.url);
  const storeName = spec.kind === "memory" ? "memory" : redactRedisUrl(spec.url);
  const receiver = new FlowReceiver({
    store,
    tokenSecret: secret,
    listen: options.listen,
    httpListen: options.httpListen,
    ...(tls === undefined ? {} : { tls }),
  });
  let statsTimer: ReturnType<typeof setInterval> | undefined;
  const stopped = Promise.withResolvers<void>();
  let signals = 0;
  const onSignal = (): void => {
    if (++signals === 1) stopped.resolve();
    else {
      log.warning("Second signal: exiting now (events not yet acked will be resent)");
      teardownLogging();
      Deno.exit(1);
    }
  };
  try {
    await receiver.start();
    const http = receiver.httpAddress;
    log.info(
      "Receiving flow events on {grpc} (gRPC, {transport}), store {store}, query API {http}",
      {
        grpc: displayAddress(receiver.grpcAddress),
        transport: tls === undefined ? "h2c" : "TLS",
        store: storeName,
        http: http === undefined ? "off" : `http://${displayAddress(http)}${QUERY_PATH}`,
      },
    );
    if (spec.kind === "memory") {
      log.info("Events are kept in memory and lost on exit (--store redis://... keeps them)");
    }
    if (!isLoopback(options.httpListen.hostname)) {
      log.warning("The query API on {address} has no authentication", {
        address: displayAddress(options.httpListen),
      });
    }
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);
    let last = { stats: receiver.stats(), at: performance.now() };
    if (options.statsIntervalMs > 0) {
      statsTimer = setInterval(() => {
        const now = { stats: receiver.stats(), at: performance.now() };
        log.info("stats: {line}", {
          line: formatReceiverStats(now.stats, { stats: last.stats, elapsedMs: now.at - last.at }),
        });
        last = now;
      }, options.statsIntervalMs);
    }
    await stopped.promise;
    const s = receiver.stats();
    log.info("Stopping: {streams} streams open, {inFlight} events being stored", {
      streams: s.activeStreams,
      inFlight: s.inFlight,
    });
    await receiver.stop();
    await store.close();
    log.info("Stopped. Summary: {line}", { line: formatReceiverStats(receiver.stats()) });
    return 0;
  } finally {
    clearInterval(statsTimer);
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await receiver.stop();
    await store.close();
  }
}

async function token(options: TokenOptions): Promise<number> {
  const secret = await readTokenSecret(options.tokenSecretFile);
  const now = Date.now();
  const t = mintToken(secret, { ttlMs: options.ttlMs, now });
  printLine(Deno.stdout, t);
  const expiry = new Date(Number(t.slice(t.indexOf(".") + 1)) * 1000);
  printLine(Deno.stderr, `netbird-ct token: valid until ${expiry.toISOString()}`);
  return 0;
}

/**
 * Runs `netbird-ct collect` or `netbird-ct token`.
 *
 * @param command The subcommand.
 * @param args Its arguments.
 * @returns The exit code: 0 success, 1 runtime failure, 2 usage error.
 */
export async function runSubcommand(
  command: "collect" | "token",
  args: string[],
): Promise<number> {
  const usage = (message: string): number => {
    printLine(Deno.stderr, `netbird-ct ${command}: ${message} (see netbird-ct ${command} --help)`);
    return 2;
  };
  let options: CollectOptions | TokenOptions;
  try {
    options = command === "collect" ? parseCollectArgs(args) : parseTokenArgs(args);
  } catch (err) {
    if (err instanceof UsageError) return usage(err.message);
    throw err;
  }
  if (options.help) {
    printLine(Deno.stdout, command === "collect" ? COLLECT_HELP : TOKEN_HELP);
    return 0;
  }
  if (command === "collect") setupLogging((options as CollectOptions).logLevel);
  try {
    return command === "collect"
      ? await collect(options as CollectOptions)
      : await token(options as TokenOptions);
  } catch (err) {
    if (err instanceof UsageError) return usage(err.message);
    const message = err instanceof Error ? err.message : String(err);
    log.debug("Failure details: {stack}", { stack: err instanceof Error ? err.stack : "" });
    printLine(Deno.stderr, `netbird-ct ${command}: ${message}`);
    return 1;
  } finally {
    if (command === "collect") teardownLogging();
  }
}
