import assert from "node:assert/strict";
import { IdleSource } from "../../lib/source.ts";

Deno.test("IdleSource delivers no batch, dumps nothing and ends its batches when closed", async () => {
  const source = new IdleSource();
  let batches = 0;
  const done = (async () => {
    for await (const _ of source.batches()) batches++;
  })();
  let ended = false;
  void done.then(() => (ended = true));
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(ended, false, "open: the batches wait");
  assert.equal(source.dump(() => assert.fail("no entry")), 0);
  assert.deepEqual(source.stats(), { received: 0, overruns: 0, kernelDrops: 0 });
  source.close();
  source.close();
  await done;
  assert.equal(batches, 0);
});
