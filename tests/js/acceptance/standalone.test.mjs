// The acceptance scenarios against `make run`: one process, SQLite, the in-process bus.

import { freePort, startStandalone } from '../lib/cluster.mjs';
import { describeTopology, describeWithoutAgora } from './topology.mjs';

async function start(env) {
  const port = await freePort();
  const backend = await startStandalone({ ...env, CALLS_API_LISTEN: `127.0.0.1:${port}` });
  return { ...backend, internalUrl: `http://127.0.0.1:${port}` };
}

describeTopology('acceptance, standalone (make run: one process, SQLite)', start);
describeWithoutAgora('acceptance, standalone without Agora credentials', start);
