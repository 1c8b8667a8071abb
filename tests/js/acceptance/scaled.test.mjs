// The acceptance scenarios against `make cluster`: the gateway, two calls-api, two signaling
// nodes and media-token as separate processes on Postgres and NATS.

import { startCluster } from '../lib/cluster.mjs';
import { describeTopology, describeWithoutAgora } from './topology.mjs';

async function start(env) {
  const cluster = await startCluster(env);
  const [internalUrl] = await cluster.apiUrls();
  if (!internalUrl) {
    await cluster.stop();
    throw new Error(`the cluster banner lists no calls-api:\n${cluster.log()}`);
  }
  return { ...cluster, internalUrl };
}

describeTopology('acceptance, scaled (2 calls-api, 2 signaling, media-token, Postgres, NATS)', start);
describeWithoutAgora('acceptance, scaled without Agora credentials', start);
