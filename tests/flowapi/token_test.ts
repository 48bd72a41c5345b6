import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import {
  bearerToken,
  MIN_SECRET_BYTES,
  mintToken,
  TokenError,
  type TokenFailure,
  verifyToken,
} from "../../lib/flowapi/token.ts";
import { SECRET } from "./_events.ts";

const NOW = Date.UTC(2026, 0, 1, 12, 0, 0);

function failure(fn: () => unknown): TokenFailure {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof TokenError, `expected a TokenError, got ${err}`);
    return err.reason;
  }
  assert.fail("expected the token to be refused");
}

Deno.test("mintToken() makes <base64 HMAC-SHA256(secret, expiry)>.<expiry seconds>", () => {
  const token = mintToken(SECRET, { ttlMs: 3_600_000, now: NOW });
  const payload = String(NOW / 1000 + 3600);
  const signature = createHmac("sha256", SECRET).update(payload).digest("base64");
  assert.equal(token, `${signature}.${payload}`);
});

Deno.test("mintToken() rounds the expiry down to a whole second", () => {
  const token = mintToken(SECRET, { ttlMs: 1500, now: NOW + 999 });
  assert.equal(token.split(".")[1], String(NOW / 1000 + 2));
});

Deno.test("mintToken() refuses a short secret and a ttl below one second", () => {
  assert.throws(
    () => mintToken(new Uint8Array(MIN_SECRET_BYTES - 1), { ttlMs: 60_000 }),
    RangeError,
  );
  assert.throws(() => mintToken(SECRET, { ttlMs: 999 }), RangeError);
  assert.throws(() => mintToken(SECRET, { ttlMs: NaN }), RangeError);
});

Deno.test("verifyToken() accepts a valid token and returns its expiry", () => {
  const token = mintToken(SECRET, { ttlMs: 60_000, now: NOW });
  assert.deepEqual(verifyToken(SECRET, token, { now: NOW }), {
    expiresAt: new Date(NOW + 60_000),
  });
  assert.deepEqual(verifyToken(SECRET, token, { now: NOW + 59_999 }), {
    expiresAt: new Date(NOW + 60_000),
  });
});

Deno.test("verifyToken() refuses a token at and after its expiry", () => {
  const token = mintToken(SECRET, { ttlMs: 60_000, now: NOW });
  assert.equal(failure(() => verifyToken(SECRET, token, { now: NOW + 60_000 })), "expired");
  assert.equal(failure(() => verifyToken(SECRET, token, { now: NOW + 86_400_000 })), "expired");
});

Deno.test("verifyToken() refuses a token signed with another secret", () => {
  const other = new TextEncoder().encode("another secret of 32 bytes......");
  const token = mintToken(other, { ttlMs: 60_000, now: NOW });
  assert.equal(failure(() => verifyToken(SECRET, token, { now: NOW })), "forged");
});

Deno.test("verifyToken() refuses a payload changed after signing (a later expiry)", () => {
  const token = mintToken(SECRET, { ttlMs: 60_000, now: NOW });
  const [signature, payload] = token.split(".") as [string, string];
  const later = `${signature}.${Number(payload) + 3600}`;
  assert.equal(failure(() => verifyToken(SECRET, later, { now: NOW })), "forged");
  // A forged token is reported as forged even when it is also expired.
  assert.equal(failure(() => verifyToken(SECRET, later, { now: NOW + 10 ** 10 })), "forged");
});

Deno.test("verifyToken() refuses a flipped signature bit", () => {
  const token = mintToken(SECRET, { ttlMs: 60_000, now: NOW });
  const first = token[0] === "A" ? "B" : "A";
  assert.equal(failure(() => verifyToken(SECRET, first + token.slice(1), { now: NOW })), "forged");
});

Deno.test("verifyToken() refuses malformed tokens", () => {
  const token = mintToken(SECRET, { ttlMs: 60_000, now: NOW });
  const [signature, payload] = token.split(".") as [string, string];
  for (
    const bad of [
      "",
      "abc",
      signature,
      `${payload}.${signature}`, // payload first
      `${signature}.`,
      `.${payload}`,
      `${signature}.${payload}.x`,
      `${signature}.-${payload}`,
      `${signature}.${payload}0000000`, // 17 digits
      `${signature.slice(0, -1)}.${payload}`, // 43 characters
      `${signature.replace("=", "")}A.${payload}`, // no padding
      ` ${token}`,
      `${signature.slice(0, -2)}_=.${payload}`, // URL-safe alphabet
    ]
  ) {
    assert.equal(failure(() => verifyToken(SECRET, bad, { now: NOW })), "malformed", bad);
  }
});

Deno.test("bearerToken() takes the token out of one Bearer value", () => {
  assert.equal(bearerToken(["Bearer abc.123"]), "abc.123");
  assert.equal(bearerToken(["bearer  abc.123 "]), "abc.123");
  assert.equal(failure(() => bearerToken([])), "missing");
  assert.equal(failure(() => bearerToken(["Basic abc"])), "malformed");
  assert.equal(failure(() => bearerToken(["Bearer"])), "malformed");
  assert.equal(failure(() => bearerToken(["Bearer a b"])), "malformed");
  assert.equal(failure(() => bearerToken(["Bearer a.1", "Bearer b.2"])), "malformed");
});
