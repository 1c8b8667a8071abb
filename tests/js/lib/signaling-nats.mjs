// A minimal NATS client (core protocol with headers) for the signaling tests: enough to play
// calls-api (queue subscriptions, replies, event publishes with headers) and to watch presence,
// without another npm dependency. Not for production use.

import net from 'node:net';
import { randomUUID } from 'node:crypto';

const CRLF = '\r\n';

function parseHeaders(text) {
  // "NATS/1.0[ status[ description]]\r\nKey: Value\r\n...\r\n\r\n"
  const lines = text.split(CRLF);
  const first = lines.shift() ?? '';
  const status = Number(first.split(' ')[1]) || undefined;
  const headers = {};
  for (const line of lines) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return { status, headers };
}

function encodeHeaders(headers) {
  let text = 'NATS/1.0' + CRLF;
  for (const [k, v] of Object.entries(headers)) text += `${k}: ${v}${CRLF}`;
  return text + CRLF;
}

export class NatsClient {
  static async connect(url = process.env.NATS_URL ?? 'nats://127.0.0.1:4222') {
    const { hostname, port } = new URL(url.replace(/^nats:/, 'http:'));
    const client = new NatsClient();
    await client.#open(hostname, Number(port || 4222));
    return client;
  }

  #socket;
  #buffer = Buffer.alloc(0);
  #subs = new Map();
  #nextSid = 1;
  #pongs = [];
  #closed = false;

  async #open(host, port) {
    this.#socket = net.connect({ host, port });
    this.#socket.setNoDelay(true);
    this.#socket.on('data', (chunk) => this.#onData(chunk));
    this.#socket.on('error', () => {});
    this.#socket.on('close', () => {
      this.#closed = true;
      for (const p of this.#pongs.splice(0)) p.reject(new Error('connection closed'));
    });
    await new Promise((resolve, reject) => {
      this.#socket.once('connect', resolve);
      this.#socket.once('error', reject);
    });
    const connect = { verbose: false, pedantic: false, headers: true, no_responders: true, protocol: 1, name: 'signaling-tests' };
    this.#socket.write(`CONNECT ${JSON.stringify(connect)}${CRLF}`);
    await this.flush();
  }

  #onData(chunk) {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    for (;;) {
      const end = this.#buffer.indexOf(CRLF);
      if (end < 0) return;
      const line = this.#buffer.subarray(0, end).toString();
      const [op, ...args] = line.split(' ');
      if (op === 'MSG' || op === 'HMSG') {
        const total = Number(args[args.length - 1]);
        if (this.#buffer.length < end + 2 + total + 2) return;
        const body = this.#buffer.subarray(end + 2, end + 2 + total);
        this.#buffer = this.#buffer.subarray(end + 2 + total + 2);
        let subject, sid, reply, headerBytes = 0;
        if (op === 'MSG') {
          [subject, sid] = args;
          reply = args.length === 4 ? args[2] : undefined;
        } else {
          [subject, sid] = args;
          reply = args.length === 5 ? args[2] : undefined;
          headerBytes = Number(args[args.length - 2]);
        }
        const { status, headers } = headerBytes ? parseHeaders(body.subarray(0, headerBytes).toString()) : { headers: {} };
        const payload = body.subarray(headerBytes);
        const sub = this.#subs.get(Number(sid));
        if (sub) sub.callback({ subject, reply, headers, status, payload, json: () => JSON.parse(payload.toString()) });
        continue;
      }
      this.#buffer = this.#buffer.subarray(end + 2);
      if (op === 'PING') this.#socket.write('PONG' + CRLF);
      else if (op === 'PONG') this.#pongs.shift()?.resolve();
      else if (op === '-ERR') console.error('nats error:', line);
    }
  }

  subscribe(subject, callback, queue) {
    const sid = this.#nextSid++;
    this.#subs.set(sid, { callback });
    this.#socket.write(`SUB ${subject}${queue ? ' ' + queue : ''} ${sid}${CRLF}`);
    return { unsubscribe: () => { this.#subs.delete(sid); if (!this.#closed) this.#socket.write(`UNSUB ${sid}${CRLF}`); } };
  }

  publish(subject, data, { headers, reply } = {}) {
    const payload = Buffer.isBuffer(data) ? data : Buffer.from(typeof data === 'string' ? data : JSON.stringify(data));
    const replyPart = reply ? ` ${reply}` : '';
    if (headers && Object.keys(headers).length) {
      const head = Buffer.from(encodeHeaders(headers));
      this.#socket.write(`HPUB ${subject}${replyPart} ${head.length} ${head.length + payload.length}${CRLF}`);
      this.#socket.write(Buffer.concat([head, payload, Buffer.from(CRLF)]));
    } else {
      this.#socket.write(`PUB ${subject}${replyPart} ${payload.length}${CRLF}`);
      this.#socket.write(Buffer.concat([payload, Buffer.from(CRLF)]));
    }
  }

  async request(subject, data, timeoutMs = 2000) {
    const inbox = `_INBOX.${randomUUID().replaceAll('-', '')}`;
    let timer;
    const reply = new Promise((resolve, reject) => {
      const sub = this.subscribe(inbox, (m) => {
        clearTimeout(timer);
        sub.unsubscribe();
        if (m.status === 503) reject(new Error('no responders'));
        else resolve(m);
      });
      timer = setTimeout(() => { sub.unsubscribe(); reject(new Error('timeout')); }, timeoutMs);
    });
    this.publish(subject, data, { reply: inbox });
    return reply;
  }

  flush() {
    return new Promise((resolve, reject) => {
      this.#pongs.push({ resolve, reject });
      this.#socket.write('PING' + CRLF);
    });
  }

  close() {
    this.#closed = true;
    this.#socket.end();
  }
}
