// The reference: what a team would otherwise run. A Node `socket.io` 4.8 server with the same
// `/calls` namespace: handshake auth (an HS256 token), `join_call` joins the call's room and
// acks, and events the backend publishes on NATS (`{prefix}.evt.call.<id>`) are fanned out to
// the room with `io.to(room).emit(...)`. Started by run.sh; prints "ready" when listening.

import { createHmac } from 'node:crypto';
import { createRequire } from 'node:module';
import http from 'node:http';

import { NatsClient } from '../../tests/js/lib/signaling-nats.mjs';

const require = createRequire(new URL('../../tests/js/package.json', import.meta.url));
const { Server } = require('socket.io');

const port = Number(process.env.PORT ?? 8090);
const prefix = process.env.NATS_SUBJECT_PREFIX ?? 'calls.v1';
const secret = process.env.JWT_SECRET ?? '';

function verify(token) {
  if (typeof token !== 'string') return null;
  const [h, p, s] = token.split('.');
  if (!h || !p || !s) return null;
  const expected = createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url');
  if (expected !== s) return null;
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
  return claims.exp * 1000 > Date.now() ? claims.sub : null;
}

const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 200 : 404).end();
});
const io = new Server(server, { serveClient: false });
const calls = io.of('/calls');
calls.use((socket, next) => {
  const user = verify(socket.handshake.auth?.token);
  if (!user) return next(new Error('unauthorized'));
  socket.data.user = user;
  next();
});
calls.on('connection', (socket) => {
  socket.on('join_call', (payload, ack) => {
    const callId = payload?.callId;
    if (typeof callId !== 'string') return ack?.({ ok: false, error: { code: 'VALIDATION_FAILED', message: 'callId' } });
    socket.join(callId);
    ack?.({ ok: true, data: { callId, seq: 0, status: 'active', participants: [] } });
  });
});

const nats = await NatsClient.connect(process.env.NATS_URL);
const head = `${prefix}.evt.call.`;
nats.subscribe(`${prefix}.evt.call.*`, (m) => {
  const { event, data } = m.json();
  calls.to(m.subject.slice(head.length)).emit(event, data);
});
await nats.flush();
server.listen(port, '127.0.0.1', () => console.log('ready'));
