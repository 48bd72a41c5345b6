/**
 * Packet capture reading for `netbird-ct replay`: pcap and pcapng files, streamed record by
 * record, and the decoding of each record into a {@linkcode CapturedPacket} with the fields flow
 * tracking needs.
 *
 * A malformed file throws a {@linkcode CaptureError} naming the byte offset; a file cut off in
 * its last record is reported through {@linkcode CaptureReader.truncation}. Packets that are not
 * decodable IP (ARP, bad headers, …) are skipped and counted in {@linkcode DecodeStats}.
 *
 * ```ts
 * import { CaptureReader, createDecodeStats, decodePacket } from "./mod.ts";
 *
 * // A little-endian pcap (raw IP) with one ICMP echo request, 100.64.0.1 → 100.64.0.2, id 7.
 * const file = new Uint8Array([
 *   0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101, 0, 0, 0,
 *   10, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, 28, 0, 0, 0,
 *   0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 100, 64, 0, 1, 100, 64, 0, 2,
 *   8, 0, 0, 0, 0, 7, 0, 1,
 * ]);
 * const stats = createDecodeStats();
 * const reader = new CaptureReader(ReadableStream.from([file]));
 * for await (const record of reader) {
 *   const packet = decodePacket(record, { stats });
 *   if (packet?.icmpId !== 7 || packet.timestampNs !== 10_000_000_000n) {
 *     throw new Error("unexpected packet");
 *   }
 * }
 * if (stats.decoded !== 1 || reader.truncation !== undefined) throw new Error("unexpected end");
 * ```
 *
 * @module
 */

export * from "./pcap.ts";
export * from "./packet.ts";
