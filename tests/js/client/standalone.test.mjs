// @calls-backend/client against `make run` (one process, SQLite, the in-process bus).

import { existsSync } from 'node:fs';
import { after, before, describe } from 'node:test';

import { STANDALONE_BIN, startStandalone } from '../lib/cluster.mjs';
import { CLIENT_ENV, defineClientScenarios } from './scenarios.mjs';

describe('@calls-backend/client against make run', { skip: !existsSync(STANDALONE_BIN) && `missing ${STANDALONE_BIN}` }, () => {
  let backend;
  before(async () => {
    backend = await startStandalone(CLIENT_ENV);
  });
  after(async () => {
    await backend?.stop();
  });
  defineClientScenarios(() => backend);
});
