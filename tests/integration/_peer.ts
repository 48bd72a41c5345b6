// deno-lint-ignore-file no-console
/**
 * Traffic peer for the kernel integration tests, run inside a network namespace:
 *
 *   ip netns exec NS deno run -A tests/integration/_peer.ts MODE ARGS...
 *
 * Modes (HOST is an address literal, everything is deterministic):
 *   tcp-server HOST PORT N      accept N connections; echo each until EOF, then close it
 *   tcp-client HOST PORT BYTES  connect, send BYTES bytes, half-close, read the echo to EOF, close
 *   udp-server HOST PORT N      answer N datagrams with the same payload
 *   udp-client HOST PORT BYTES  send one datagram of BYTES bytes, wait for the echo
 *   udp-burst  HOST PORT COUNT  send one 1-byte datagram to each of PORT..PORT+COUNT-1
 *   udp-flows  HOST PORT COUNT  send one 1-byte datagram to PORT from each of COUNT sockets
 *                               (COUNT flows with one key: the source ports differ)
 *   tcp-connect HOST PORT N     attempt N connections one after the other and close each at
 *                               once; a refused one counts too (the SYN made a conntrack entry)
 *   tcp-trickle HOST PORT CHUNKS INTERVAL_MS
 *                               connect, send CHUNKS chunks of 1024 bytes INTERVAL_MS apart while
 *                               reading the echo (tcp-server), half-close, read the echo to EOF
 *
 * Servers print "ready" once listening. Every mode prints "done" when it finished and exits 0.
 *
 * @module
 */

import dgram from "node:dgram";

const TIMEOUT_MS = 15_000;

function udpType(host: string): "udp4" | "udp6" {
  return host.includes(":") ? "udp6" : "udp4";
}

async function echo(conn: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(65536);
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      let chunk = buf.subarray(0, n);
      while (chunk.length > 0) chunk = chunk.subarray(await conn.write(chunk));
    }
  } finally {
    conn.close();
  }
}

async function tcpServer(host: string, port: number, count: number): Promise<void> {
  const listener = Deno.listen({ hostname: host, port, transport: "tcp" });
  console.log("ready");
  const sessions: Promise<void>[] = [];
  for (let i = 0; i < count; i++) sessions.push(echo(await listener.accept()));
  listener.close();
  await Promise.all(sessions);
}

async function tcpClient(host: string, port: number, bytes: number): Promise<void> {
  const conn = await Deno.connect({ hostname: host, port, transport: "tcp" });
  try {
    let data = new Uint8Array(bytes).fill(0x61);
    while (data.length > 0) data = data.subarray(await conn.write(data));
    await conn.closeWrite();
    const buf = new Uint8Array(65536);
    let got = 0;
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      got += n;
    }
    if (got !== bytes) throw new Error(`echo returned ${got} bytes, expected ${bytes}`);
  } finally {
    conn.close();
  }
}

function udpServer(host: string, port: number, count: number): Promise<void> {
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  const socket = dgram.createSocket(udpType(host));
  let seen = 0;
  socket.on("error", reject);
  socket.on("message", (msg, rinfo) => {
    socket.send(msg, rinfo.port, rinfo.address, (err) => {
      if (err) return reject(err);
      if (++seen === count) socket.close(() => resolve());
    });
  });
  socket.bind(port, host, () => console.log("ready"));
  return promise;
}

function udpClient(host: string, port: number, bytes: number): Promise<void> {
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  const socket = dgram.createSocket(udpType(host));
  socket.on("error", reject);
  socket.on("message", (msg) => {
    if (msg.length !== bytes) return reject(new Error(`echo of ${msg.length} bytes`));
    socket.close(() => resolve());
  });
  socket.send(new Uint8Array(bytes).fill(0x62), port, host, (err) => {
    if (err) reject(err);
  });
  return promise;
}

function udpBurst(host: string, port: number, count: number): Promise<void> {
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  const socket = dgram.createSocket(udpType(host));
  socket.on("error", reject);
  const payload = new Uint8Array([0x63]);
  let sent = 0;
  for (let i = 0; i < count; i++) {
    socket.send(payload, port + i, host, (err) => {
      if (err) return reject(err);
      if (++sent === count) socket.close(() => resolve());
    });
  }
  return promise;
}

function udpFlows(host: string, port: number, count: number): Promise<void> {
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  const payload = new Uint8Array([0x64]);
  let sent = 0;
  for (let i = 0; i < count; i++) {
    const socket = dgram.createSocket(udpType(host));
    socket.on("error", reject);
    socket.send(payload, port, host, (err) => {
      if (err) return reject(err);
      socket.close(() => {
        if (++sent === count) resolve();
      });
    });
  }
  return promise;
}

async function tcpConnect(host: string, port: number, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    try {
      const conn = await Deno.connect({ hostname: host, port, transport: "tcp" });
      conn.close();
    } catch (err) {
      if (!(err instanceof Deno.errors.ConnectionRefused)) throw err;
    }
  }
}

async function tcpTrickle(
  host: string,
  port: number,
  chunks: number,
  intervalMs: number,
): Promise<void> {
  const conn = await Deno.connect({ hostname: host, port, transport: "tcp" });
  try {
    const reading = (async (): Promise<number> => {
      const buf = new Uint8Array(65536);
      let got = 0;
      while (true) {
        const n = await conn.read(buf);
        if (n === null) return got;
        got += n;
      }
    })();
    const chunk = new Uint8Array(1024).fill(0x65);
    for (let i = 0; i < chunks; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, intervalMs));
      let data = chunk;
      while (data.length > 0) data = data.subarray(await conn.write(data));
    }
    await conn.closeWrite();
    const got = await reading;
    if (got !== chunks * 1024) {
      throw new Error(`echo returned ${got} bytes, expected ${chunks * 1024}`);
    }
  } finally {
    conn.close();
  }
}

async function main(args: string[]): Promise<void> {
  const [mode, host, portText, nText, extraText] = args;
  const port = Number(portText);
  const n = Number(nText);
  if (host === undefined || !Number.isInteger(port) || !Number.isInteger(n)) {
    throw new Error(`usage: _peer.ts MODE HOST PORT N [INTERVAL_MS] (got ${args.join(" ")})`);
  }
  switch (mode) {
    case "tcp-server":
      return await tcpServer(host, port, n);
    case "tcp-client":
      return await tcpClient(host, port, n);
    case "udp-server":
      return await udpServer(host, port, n);
    case "udp-client":
      return await udpClient(host, port, n);
    case "udp-burst":
      return await udpBurst(host, port, n);
    case "udp-flows":
      return await udpFlows(host, port, n);
    case "tcp-connect":
      return await tcpConnect(host, port, n);
    case "tcp-trickle": {
      const intervalMs = Number(extraText);
      if (!Number.isInteger(intervalMs)) throw new Error("tcp-trickle needs INTERVAL_MS");
      return await tcpTrickle(host, port, n, intervalMs);
    }
    default:
      throw new Error(`unknown mode "${mode}"`);
  }
}

const timer = setTimeout(() => {
  console.error(`_peer.ts ${Deno.args.join(" ")}: timed out`);
  Deno.exit(3);
}, TIMEOUT_MS);
try {
  await main(Deno.args);
  console.log("done");
} catch (err) {
  console.error(`_peer.ts ${Deno.args.join(" ")}: ${err instanceof Error ? err.message : err}`);
  Deno.exit(1);
} finally {
  clearTimeout(timer);
}
