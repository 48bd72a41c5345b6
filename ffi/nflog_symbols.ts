/**
 * The dlopen table and constants of libnetfilter_log (`libnetfilter_log.so.1`, Debian package
 * libnetfilter-log1). Pure data, no side effects. Each parameter carries its C declaration as a
 * comment; the constants are from `<libnetfilter_log/linux_nfnetlink_log.h>`.
 *
 * @module
 */

/** `libnetfilter_log.so.1`. */
export const NFLOG_SYMBOLS = {
  nflog_open: { parameters: [], result: "pointer" }, // struct nflog_handle *(void)
  nflog_close: { parameters: ["pointer"], result: "i32" }, // (struct nflog_handle *h)
  nflog_fd: { parameters: ["pointer"], result: "i32" }, // (struct nflog_handle *h)
  nflog_nfnlh: { parameters: ["pointer"], result: "pointer" }, // struct nfnl_handle *(h)
  nflog_bind_pf: {
    parameters: [
      "pointer", // struct nflog_handle *h
      "u16", // uint16_t pf
    ],
    result: "i32",
  },
  nflog_bind_group: {
    parameters: [
      "pointer", // struct nflog_handle *h
      "u16", // uint16_t num
    ],
    result: "pointer", // struct nflog_g_handle *
  },
  nflog_unbind_group: { parameters: ["pointer"], result: "i32" }, // (struct nflog_g_handle *gh)
  nflog_set_mode: {
    parameters: [
      "pointer", // struct nflog_g_handle *gh
      "u8", // uint8_t mode
      "u32", // unsigned int len
    ],
    result: "i32",
  },
  nflog_set_timeout: { parameters: ["pointer", "u32"], result: "i32" }, // (gh, uint32_t timeout)
  nflog_set_qthresh: { parameters: ["pointer", "u32"], result: "i32" }, // (gh, uint32_t qthresh)
  nflog_callback_register: {
    parameters: [
      "pointer", // struct nflog_g_handle *gh
      "function", // nflog_callback *cb
      "pointer", // void *data
    ],
    result: "i32",
  },
  nflog_handle_packet: {
    parameters: [
      "pointer", // struct nflog_handle *h
      "buffer", // char *buf
      "i32", // int len
    ],
    result: "i32",
  },
  nflog_get_payload: {
    parameters: [
      "pointer", // struct nflog_data *nfad
      "buffer", // char **data
    ],
    result: "i32", // payload length, or -1 without one
  },
  nflog_get_prefix: { parameters: ["pointer"], result: "pointer" }, // char *(nfad)
  nflog_get_nfmark: { parameters: ["pointer"], result: "u32" }, // uint32_t (nfad)
  nflog_get_indev: { parameters: ["pointer"], result: "u32" }, // uint32_t (nfad)
  nflog_get_outdev: { parameters: ["pointer"], result: "u32" }, // uint32_t (nfad)
} as const satisfies Deno.ForeignLibraryInterface;

/** Bound libnetfilter_log symbols. */
export type NflogSymbols = Deno.DynamicLibrary<typeof NFLOG_SYMBOLS>["symbols"];

/**
 * The callback signature of `nflog_callback_register`:
 * `int cb(struct nflog_g_handle *gh, struct nfgenmsg *nfmsg, struct nflog_data *nfd, void *data)`.
 */
export const NFLOG_CALLBACK = {
  parameters: ["pointer", "pointer", "pointer", "pointer"],
  result: "i32",
} as const satisfies Deno.UnsafeCallbackDefinition;

/** Copy modes of `nflog_set_mode` (`NFULNL_COPY_*`). */
export const NFULNL_COPY = {
  /** Nothing. */
  NONE: 0x00,
  /** Metadata only. */
  META: 0x01,
  /** Metadata and the packet, up to the range given. */
  PACKET: 0x02,
} as const;

/** Address families for `nflog_bind_pf`. */
export const NFLOG_PF = {
  /** IPv4. */
  INET: 2,
  /** IPv6. */
  INET6: 10,
} as const;
