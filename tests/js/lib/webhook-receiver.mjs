// The host application's side of webhooks, as its developers would write it: an HTTP endpoint
// that verifies every delivery with the official `standardwebhooks` package (never our code)
// and answers what the test says (2xx, an error, 410, or nothing at all for a while).

import http from 'node:http';

import { Webhook } from 'standardwebhooks';

/**
 * Starts a receiver on 127.0.0.1. `receiver.secrets` are the secrets it knows; each request
 * records, per secret, whether the official library verified it. `receiver.answer(request)`
 * decides the status (default 204); returning `'hang'` keeps the request open until
 * `releaseHeld()` or the connection closes.
 */
export async function startReceiver({ secrets = [] } = {}) {
  const receiver = {
    secrets: [...secrets],
    /** Every request, in arrival order. */
    requests: [],
    /** Requests answered 2xx, in arrival order. */
    accepted: [],
    answer: () => 204,
    held: [],
    url: '',
  };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const headers = {
        'webhook-id': req.headers['webhook-id'],
        'webhook-timestamp': req.headers['webhook-timestamp'],
        'webhook-signature': req.headers['webhook-signature'],
      };
      const verified = {};
      for (const secret of receiver.secrets) {
        try {
          new Webhook(secret).verify(body, headers);
          verified[secret] = true;
        } catch {
          verified[secret] = false;
        }
      }
      let payload;
      try {
        payload = JSON.parse(body);
      } catch {
        payload = undefined;
      }
      const record = {
        id: headers['webhook-id'], headers, contentType: req.headers['content-type'], body, payload, verified,
        at: Date.now(), closed: false,
      };
      req.socket.once('close', () => { record.closed = true; });
      receiver.requests.push(record);
      const status = await receiver.answer(record);
      if (status === 'hang') {
        receiver.held.push({ record, res });
        return;
      }
      if (status >= 200 && status < 300) receiver.accepted.push(record);
      res.writeHead(status, { 'content-type': 'text/plain' }).end(status >= 400 ? 'nope' : '');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  receiver.url = `http://127.0.0.1:${server.address().port}/hooks`;

  /** Accepted deliveries about `callId`, once per webhook-id, in the order they arrived. */
  receiver.eventsOf = (callId) => {
    const seen = new Set();
    return receiver.accepted.filter((r) => {
      const data = r.payload?.data ?? {};
      if ((data.callId ?? data.id) !== callId || seen.has(r.id)) return false;
      seen.add(r.id);
      return true;
    });
  };
  /** Every request about `callId`, retries included. */
  receiver.requestsOf = (callId) => receiver.requests.filter((r) => {
    const data = r.payload?.data ?? {};
    return (data.callId ?? data.id) === callId;
  });
  receiver.typesOf = (callId) => receiver.eventsOf(callId).map((r) => r.payload.type);
  receiver.releaseHeld = (status = 204) => {
    for (const { record, res } of receiver.held.splice(0)) {
      if (!res.writableEnded && !record.closed) {
        if (status >= 200 && status < 300) receiver.accepted.push(record);
        res.writeHead(status).end();
      }
    }
  };
  receiver.close = () => new Promise((resolve) => {
    receiver.releaseHeld(503);
    server.closeAllConnections?.();
    server.close(() => resolve());
  });
  return receiver;
}

/** The internal webhooks API of one notifier (`base` is its own URL, not the gateway's). */
export class WebhooksApi {
  constructor(base, token) {
    this.base = base;
    this.token = token;
  }

  async call(method, route, body, { token = this.token } = {}) {
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${this.base}/internal/v1/webhooks${route}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, body: json, text };
  }

  /** Creates an endpoint and checks it worked; answers it (with its whole secrets). */
  async create(body) {
    const res = await this.call('POST', '', body);
    if (res.status !== 201) throw new Error(`creating a webhook endpoint: ${res.status} ${res.text}`);
    return res.body.data;
  }
}

/** A new Standard Webhooks secret. */
export function newSecret() {
  const bytes = new Uint8Array(32);
  globalThis.crypto.getRandomValues(bytes);
  return `whsec_${Buffer.from(bytes).toString('base64')}`;
}
