// A double of Agora's kicking-rule RESTful API (`POST /dev/v1/kicking-rule`), from Agora's
// public reference ("Create a banning rule"), refusing what it documents as refused: wrong
// HTTP Basic credentials (401), a body that is not JSON, a missing or foreign `appid`, a `uid`
// of 0 or not a number, none of `cname`/`uid`/`ip`, `privileges` not a non-empty list of
// join_channel/publish_audio/publish_video, both `time` and `time_in_seconds` (400). A created
// rule answers 200 `{status: 'success', id}`. (The Rust tests have the same double in
// services/calls-api/tests/support/agora_rest.rs.)

import http from 'node:http';

export const AGORA_CUSTOMER_ID = 'acceptance-customer-id-5a0e';
export const AGORA_CUSTOMER_SECRET = 'acceptance-customer-secret-91c7d2';

const PRIVILEGES = new Set(['join_channel', 'publish_audio', 'publish_video']);

function problem(rule, appId) {
  if (rule === null || typeof rule !== 'object' || Array.isArray(rule)) return 'the body must be a JSON object';
  if (typeof rule.appid !== 'string') return 'appid is required';
  if (rule.appid !== appId) return 'invalid appid';
  if ('uid' in rule && (!Number.isInteger(rule.uid) || rule.uid === 0)) return 'uid must be a number other than 0';
  if ('cname' in rule && typeof rule.cname !== 'string') return 'cname must be a string';
  if (!['cname', 'uid', 'ip'].some((k) => k in rule)) return 'one of cname, uid or ip is required';
  if (!Array.isArray(rule.privileges) || rule.privileges.length === 0 || !rule.privileges.every((p) => PRIVILEGES.has(p))) {
    return 'privileges must list join_channel, publish_audio or publish_video';
  }
  if ('time' in rule && 'time_in_seconds' in rule) return 'set time or time_in_seconds, not both';
  return null;
}

/** Starts the double for the project `appId`; `rules` are the rules created, as posted. */
export async function startAgoraRest(appId) {
  const rules = [];
  const refused = [];
  const expected = `Basic ${Buffer.from(`${AGORA_CUSTOMER_ID}:${AGORA_CUSTOMER_SECRET}`).toString('base64')}`;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      const answer = (status, json) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(json));
      };
      if (req.method !== 'POST' || req.url !== '/dev/v1/kicking-rule') return answer(404, { message: 'not found' });
      let rule = null;
      try { rule = JSON.parse(body); } catch { /* refused below */ }
      if (req.headers.authorization !== expected) {
        refused.push({ status: 401, rule });
        return answer(401, { message: 'Invalid authentication credentials' });
      }
      const why = (req.headers['content-type'] ?? '').startsWith('application/json') ? problem(rule, appId) : 'Content-Type must be application/json';
      if (why) {
        refused.push({ status: 400, rule, why });
        return answer(400, { message: why });
      }
      rules.push(rule);
      return answer(200, { status: 'success', id: 1952 + rules.length });
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    rules,
    refused,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
