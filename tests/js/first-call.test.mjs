// The newcomer's path, in both topologies: `calls-backend` (what `make run` starts) and
// scripts/cluster.sh (what `make cluster` starts). Each runs examples/first-call.mjs, the guide's flow
// on the TypeScript client (clients/js, built by `make client`), against the gateway and expects it to finish.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';

import { STANDALONE_BIN, runExample, startCluster, startStandalone } from './lib/cluster.mjs';

describe('a first call, as the README walks a newcomer through it', () => {
  test('against make run (one process, SQLite): the example client completes the call and SIGTERM stops it', { skip: !existsSync(STANDALONE_BIN) && `missing ${STANDALONE_BIN}` }, async () => {
    const backend = await startStandalone();
    try {
      const { code, output } = runExample(backend.base);
      assert.equal(code, 0, `the example client failed against make run:\n${output}\nserver log:\n${backend.log()}`);
      assert.match(output, /Done: the call flow works end to end/);
      assert.ok(existsSync(path.join(backend.dir, 'data', 'calls.db')), 'the data file should live in ./data/calls.db');
    } finally {
      const exit = await backend.stop();
      assert.equal(exit, 0, `calls-backend should exit cleanly on SIGTERM, exited ${exit}:\n${backend.log()}`);
    }
  });

  test('against make cluster (2 calls-api, 2 signaling, Postgres, NATS): the same client completes the call', async () => {
    const cluster = await startCluster();
    try {
      const { code, output } = runExample(cluster.base);
      assert.equal(code, 0, `the example client failed against make cluster:\n${output}\ncluster output:\n${cluster.log()}`);
      assert.match(output, /Done: the call flow works end to end/);
    } finally {
      const exit = await cluster.stop();
      assert.equal(exit, 0, `cluster.sh should stop every child and exit 0 on SIGTERM, exited ${exit}:\n${cluster.log()}`);
    }
  });
});
