import assert from "node:assert/strict";
import { Accounting, type SysctlAccess } from "../../lib/accounting.ts";

/** A sysctl in memory that records every write and can be told to fail. */
class FakeSysctl implements SysctlAccess {
  readonly name = "net.netfilter.nf_conntrack_acct";
  value: string;
  reads = 0;
  readonly writes: string[] = [];
  failRead = false;
  failWrite = false;

  constructor(value: string) {
    this.value = value;
  }

  read(): string {
    this.reads++;
    if (this.failRead) throw new Error("EACCES: permission denied");
    return this.value;
  }

  write(value: string): void {
    if (this.failWrite) throw new Error("EROFS: read-only file system");
    this.writes.push(value);
    this.value = value;
  }
}

Deno.test("Accounting.enable() writes 1 when the value was 0", () => {
  const io = new FakeSysctl("0\n");
  const acct = new Accounting(io);
  assert.equal(acct.enable(), true);
  assert.deepEqual(io.writes, ["1"]);
  assert.equal(acct.modified, true);
});

Deno.test("Accounting.restore() writes back 0 after enabling from 0", () => {
  const io = new FakeSysctl("0\n");
  const acct = new Accounting(io);
  acct.enable();
  acct.restore();
  assert.deepEqual(io.writes, ["1", "0"]);
  assert.equal(acct.modified, false);
});

Deno.test("Accounting.enable() does not write when the value is already 1", () => {
  const io = new FakeSysctl("1\n");
  const acct = new Accounting(io);
  assert.equal(acct.enable(), true);
  assert.deepEqual(io.writes, []);
  assert.equal(acct.modified, false);
});

Deno.test("Accounting.restore() does nothing when enable() did not change the value", () => {
  const io = new FakeSysctl("1\n");
  const acct = new Accounting(io);
  acct.enable();
  acct.restore();
  assert.deepEqual(io.writes, []);
  assert.equal(io.value, "1\n");
});

Deno.test("Accounting.restore() writes back the previous value, not always 0 as NetBird does", () => {
  const io = new FakeSysctl("2\n");
  const acct = new Accounting(io);
  acct.enable();
  acct.restore();
  assert.deepEqual(io.writes, ["1", "2"]);
});

Deno.test("Accounting.enable() treats empty content as 0", () => {
  const io = new FakeSysctl("");
  const acct = new Accounting(io);
  assert.equal(acct.enable(), true);
  acct.restore();
  assert.deepEqual(io.writes, ["1", "0"]);
});

Deno.test("Accounting.enable() treats whitespace-only content as 0", () => {
  const io = new FakeSysctl(" \n");
  const acct = new Accounting(io);
  acct.enable();
  acct.restore();
  assert.deepEqual(io.writes, ["1", "0"]);
});

Deno.test("Accounting.enable() leaves unparsable content alone and returns false", () => {
  const io = new FakeSysctl("on\n");
  const acct = new Accounting(io);
  assert.equal(acct.enable(), false);
  assert.deepEqual(io.writes, []);
  assert.equal(acct.modified, false);
});

Deno.test("Accounting.enable() returns false without writing when the read fails", () => {
  const io = new FakeSysctl("0");
  io.failRead = true;
  const acct = new Accounting(io);
  assert.equal(acct.enable(), false);
  assert.deepEqual(io.writes, []);
  assert.equal(acct.modified, false);
});

Deno.test("Accounting.enable() returns false and stays unmodified when the write fails", () => {
  const io = new FakeSysctl("0");
  io.failWrite = true;
  const acct = new Accounting(io);
  assert.equal(acct.enable(), false);
  assert.equal(acct.modified, false);
});

Deno.test("Accounting.restore() keeps modified true when the write back fails", () => {
  const io = new FakeSysctl("0");
  const acct = new Accounting(io);
  acct.enable();
  io.failWrite = true;
  acct.restore();
  assert.equal(acct.modified, true);
  assert.equal(io.value, "1");
});

Deno.test("Accounting.restore() retries after a failed write back", () => {
  const io = new FakeSysctl("0");
  const acct = new Accounting(io);
  acct.enable();
  io.failWrite = true;
  acct.restore();
  io.failWrite = false;
  acct.restore();
  assert.deepEqual(io.writes, ["1", "0"]);
  assert.equal(acct.modified, false);
});

Deno.test("Accounting.enable() is idempotent", () => {
  const io = new FakeSysctl("0");
  const acct = new Accounting(io);
  assert.equal(acct.enable(), true);
  assert.equal(acct.enable(), true);
  assert.deepEqual(io.writes, ["1"]);
  assert.equal(io.reads, 1);
  acct.restore();
  assert.deepEqual(io.writes, ["1", "0"]);
});

Deno.test("Accounting.restore() is idempotent", () => {
  const io = new FakeSysctl("0");
  const acct = new Accounting(io);
  acct.enable();
  acct.restore();
  acct.restore();
  assert.deepEqual(io.writes, ["1", "0"]);
});

Deno.test("Accounting.restore() does nothing before enable()", () => {
  const io = new FakeSysctl("0");
  new Accounting(io).restore();
  assert.deepEqual(io.writes, []);
});

Deno.test("Accounting[Symbol.dispose]() restores the previous value", () => {
  const io = new FakeSysctl("0");
  {
    using acct = new Accounting(io);
    acct.enable();
    assert.equal(io.value, "1");
  }
  assert.deepEqual(io.writes, ["1", "0"]);
});
