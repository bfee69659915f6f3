// The request fuzzer: a running studio server (the built out/main/server.js, its own process) gets
// seeded batches of hostile HTTP requests written byte for byte on raw sockets (targets like `//`,
// malformed percent-escapes, cookies other apps set, wrong and right tokens, lying Content-Length,
// broken chunked bodies, hostile API calls), hostile WebSocket frames on raw upgraded sockets, and
// API calls over a real WebSocket. After every batch the process must be alive and answer a health
// call; nothing without the token may get a 2xx (or a 101); no answer may be a 500 or `internal`.
import { connect } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { api } from '../../src/shared/api';
import { FUZZ_SEED, INHERITED_NAMES, rng, type Rng } from '../unit/seeded';
import { spawnServer, type ServerProcess } from './server-process';

const BATCHES = 16;
const HTTP_PER_BATCH = 48;
const RAW_WS_PER_BATCH = 4;
const WS_CALLS_PER_BATCH = 24;

let server: ServerProcess;
let dataDir: string;
beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'shira-fuzz-data-'));
  // No native engine: a valid call that reaches a handler answers quickly instead of training.
  server = await spawnServer(dataDir, { SHIRA_WORKER_BIN: join(dataDir, 'no-worker') });
});
afterAll(async () => {
  await server?.stop();
  await rm(dataDir, { recursive: true, force: true });
});

interface RawReply {
  /** Final status (1xx interim answers skipped, except 101), or null when the server only closed. */
  status: number | null;
  body: string;
}

/**
 * Writes `bytes` on a fresh socket and reads one answer: done when its Content-Length is in (or the
 * server closes, or `ms` pass). `hangUp` half-closes after writing — a client that leaves mid-body;
 * otherwise the socket stays open, since Node's server drops a request whose client half-closed.
 */
function raw(bytes: Buffer, o: { ms?: number; hangUp?: boolean } = {}): Promise<RawReply> {
  return new Promise((resolveReply) => {
    const socket = connect(server.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let done = false;
    const parse = () => {
      const text = Buffer.concat(chunks).toString('latin1');
      // Interim answers (100 Continue) come first; the final one is what counts, 101 included.
      const heads = [...text.matchAll(/^HTTP\/1\.[01] (\d{3})[^\r\n]*\r\n([\s\S]*?)\r\n\r\n/gm)];
      const final = heads.find((m) => Number(m[1]) >= 200 || Number(m[1]) === 101);
      if (!final) return { status: null, body: '', complete: false };
      const bodyStart = final.index! + final[0].length;
      const length = /^content-length: *(\d+)/im.exec(final[2]!)?.[1];
      const body = text.slice(bodyStart);
      return { status: Number(final[1]), body, complete: Number(final[1]) === 101 || (length !== undefined && Buffer.byteLength(body, 'latin1') >= Number(length)) };
    };
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const { status, body } = parse();
      resolveReply({ status, body });
    };
    const timer = setTimeout(finish, o.ms ?? 3000);
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      if (parse().complete) finish();
    });
    socket.on('error', finish);
    socket.on('close', finish);
    socket.write(bytes, () => {
      if (o.hangUp) socket.end();
    });
  });
}

interface Built {
  bytes: Buffer;
  /** The client leaves before sending all it announced. */
  hangUp: boolean;
  /** The request carries the right token somewhere (header, cookie or query) with a Host and Origin that pass. */
  authed: boolean;
  isApiCall: boolean;
  what: string;
}

/** A hostile `input` as JSON text (deep nesting is written out: JSON.stringify would overflow on it). */
function hostileInput(r: Rng): string {
  const deep = (n: number, open: string, close: string) => `${open.repeat(n)}0${close.repeat(n)}`;
  return r.pick<() => string>([
    () => '{}',
    () => 'null',
    () => '[]',
    () => '"x"',
    () => '{"id":"seven"}',
    () => '{"id":1e309}',
    () => '{"id":-0}',
    () => '{"constructor":1}',
    () => '{"__proto__":{"polluted":true}}',
    () => JSON.stringify({ source: { kind: r.pick(INHERITED_NAMES), path: '/' } }),
    () => JSON.stringify({ source: { kind: 'files', paths: ['x'.repeat(5000)] } }),
    () => `{"entries":${deep(5000, '[', ']')}}`,
    () => deep(100_000, '{"a":', '}'),
    () => JSON.stringify({ prompt: 'p'.repeat(2000) }),
    () => JSON.stringify({ id: 1, name: '\u0000' }),
    () => JSON.stringify({ path: '/etc/passwd' }),
    () => JSON.stringify({ id: 1, dir: '/tmp/evil-export' }),
  ])();
}

const callText = (id: number, method: string, input: string) => `{"kind":"call","id":${id},"method":${JSON.stringify(method)},"input":${input}}`;

function build(r: Rng): Built {
  const { port, token } = server;
  const hostOk = `127.0.0.1:${port}`;
  // Half the cases are well-formed and carry the token, so the hostile targets and bodies reach the
  // routes behind authentication; the other half are hostile in every part.
  const wellFormed = r.bool(0.5);
  const method = wellFormed ? r.pick(['GET', 'POST', 'POST']) : r.pick(['GET', 'GET', 'GET', 'POST', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'HEAD', 'PATCH', 'TRACE', 'CONNECT', 'G\u00c9T', 'FOO']);
  const target = r.pick([
    '/',
    '//',
    '///',
    '//evil.example/',
    '/%',
    '/%zz',
    '/%E0%A4%A',
    '/%00',
    '/..',
    '/../../../etc/passwd',
    '/..%2f..%2f..%2fetc%2fpasswd',
    '/assets/%2e%2e/%2e%2e/index.html',
    '/media/thumb/1',
    '/media/../../etc/passwd',
    '/media/thumb/-1',
    '/media/thumb/1e309',
    '/media/constructor/1',
    '/media/__proto__/1',
    '/upload/x?path=.',
    '/upload/x?path=..',
    '/upload/x?path=%00',
    '/upload/x?path=a%2F..%2F..%2Fb',
    `/upload/${'a'.repeat(65)}?path=a.png`,
    '/upload/constructor?path=a.png',
    '/api/call',
    '/api/call?x=%',
    '/ws',
    '/download/adapter/1.safetensors',
    '/download/adapter/99999999999999999999.safetensors',
    '/download/adapter/constructor.shira.json',
    `/?token=${token}`,
    '/?token=wrong',
    '/?token=%',
    '*',
    'http://evil.example/',
    `/${'a'.repeat(r.int(1, 30_000))}`,
    `/${r
      .bytes(12)
      .toString('latin1')
      .replace(/[\r\n ]/g, '_')}`,
  ]);
  const headers: string[] = [];
  const hostHeader = wellFormed ? hostOk : r.pick([hostOk, hostOk, hostOk, `localhost:${port}`, 'evil.example', '', null, `${hostOk}\u00ff`]);
  if (hostHeader !== null) headers.push(`Host: ${hostHeader}`);
  const origin = wellFormed ? r.pick([undefined, `http://${hostOk}`]) : r.pick([undefined, undefined, `http://${hostOk}`, 'http://evil.example', 'null']);
  if (origin !== undefined) headers.push(`Origin: ${origin}`);
  const tokenVia = wellFormed ? r.pick(['bearer', 'cookie']) : r.pick(['none', 'none', 'bearer', 'cookie', 'wrong-bearer', 'wrong-cookie']);
  if (tokenVia === 'bearer') headers.push(`Authorization: Bearer ${token}`);
  if (tokenVia === 'wrong-bearer') headers.push(r.pick(['Authorization: Bearer nope', 'Authorization: Bearer ', 'Authorization: Basic Zm9vOmJhcg==', `Authorization: Bearer ${'t'.repeat(8000)}`]));
  const otherCookies = r.pick(['', 'a=%', 'theme=%zz; lang=%E0%A4%A', '=;;;=', `${'c=1; '.repeat(500)}`, 'shira_token=%', 'shira_token=%E0%A4%A; other=1', `x=${'%'.repeat(200)}`]);
  const cookieToken = tokenVia === 'cookie' ? `shira_token=${encodeURIComponent(token)}` : tokenVia === 'wrong-cookie' ? 'shira_token=wrong' : '';
  const cookie = [otherCookies, cookieToken].filter(Boolean).join('; ');
  if (cookie) headers.push(`Cookie: ${cookie}`);
  if (r.bool(0.1)) headers.push('Expect: 100-continue');
  if (!wellFormed && r.bool(0.05)) headers.push('Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==');
  else headers.push('Connection: close');

  const isApiCall = target === '/api/call' && method === 'POST';
  let body: Buffer = Buffer.alloc(0);
  const bodyKind = r.pick(['none', 'json-call', 'json-call', 'garbage', 'huge', 'not-json']);
  if (bodyKind === 'json-call') {
    const name = r.pick([...Object.keys(api), ...INHERITED_NAMES, '', 'x'.repeat(300)]);
    body = Buffer.from(`{"method":${JSON.stringify(name)},"input":${hostileInput(r)}}`);
  } else if (bodyKind === 'garbage') body = r.bytes(r.int(1, 4000));
  else if (bodyKind === 'huge') body = Buffer.alloc(r.int(1, 3) * 2 ** 20, 0x7b);
  else if (bodyKind === 'not-json') body = Buffer.from('{"method": "app.info", "input": ');
  const framing = wellFormed ? r.pick(['length', 'chunked']) : r.pick(['length', 'length', 'chunked', 'bad-chunked', 'lying-length', 'two-lengths', 'negative-length']);
  let payload: Buffer = body;
  if (framing === 'length') headers.push(`Content-Length: ${body.length}`);
  else if (framing === 'chunked') {
    headers.push('Transfer-Encoding: chunked');
    payload = Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]);
  } else if (framing === 'bad-chunked') {
    headers.push('Transfer-Encoding: chunked');
    payload = Buffer.concat([Buffer.from(r.pick(['zz\r\n', 'ffffffffffffffff\r\n', '-1\r\n', '5\r\nab'])), body.subarray(0, 100)]);
  } else if (framing === 'lying-length') headers.push(`Content-Length: ${body.length + r.int(1, 10_000)}`);
  else if (framing === 'two-lengths') headers.push(`Content-Length: ${body.length}`, `Content-Length: ${body.length + 1}`);
  else headers.push(r.pick(['Content-Length: -1', 'Content-Length: abc', 'Content-Length: 1e3']));
  // Header lines a browser would never send: the parser must refuse them as a 400, not crash.
  if (!wellFormed && r.bool(0.05)) headers.push(r.pick(['X-Bad: a\u0000b', 'Bad Header: 1', `X-Long: ${'h'.repeat(20_000)}`, ': empty-name']));
  const head = `${method} ${target} HTTP/1.1\r\n${headers.join('\r\n')}\r\n\r\n`;
  const authed =
    (tokenVia === 'bearer' || tokenVia === 'cookie' || target === `/?token=${token}`) &&
    (hostHeader === hostOk || hostHeader === `localhost:${port}`) &&
    (origin === undefined || origin === `http://${hostHeader}`);
  return {
    bytes: Buffer.concat([Buffer.from(head, 'latin1'), payload]),
    hangUp: framing === 'lying-length' || framing === 'bad-chunked',
    authed,
    isApiCall,
    what: `${method} ${target.slice(0, 60)} token:${tokenVia} host:${String(hostHeader).slice(0, 30)} origin:${origin} body:${bodyKind}/${framing}`,
  };
}

/** A masked client frame (RFC 6455 §5.2), optionally with the mask bit cleared (a protocol error). */
function frame(opcode: number, payload: Buffer, o: { fin?: boolean; masked?: boolean; rsv?: number } = {}): Buffer {
  const { fin = true, masked = true, rsv = 0 } = o;
  const len = payload.length;
  const head = [((fin ? 0x80 : 0) | (rsv << 4) | opcode) & 0xff];
  const maskBit = masked ? 0x80 : 0;
  if (len < 126) head.push(maskBit | len);
  else if (len < 65536) head.push(maskBit | 126, len >> 8, len & 0xff);
  else head.push(maskBit | 127, 0, 0, 0, 0, (len >>> 24) & 0xff, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff);
  if (!masked) return Buffer.concat([Buffer.from(head), payload]);
  const mask = Buffer.from([1, 2, 3, 4]);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([Buffer.from(head), mask, body]);
}

function rawWsFrames(r: Rng): Buffer {
  const call = (method: string, input: string) => Buffer.from(callText(r.int(1, 1e6), method, input));
  const frames = [
    () => frame(0x1, call('datasets.import', JSON.stringify({ source: { kind: r.pick(INHERITED_NAMES), path: '/' } }))),
    () => frame(0x1, call(r.pick(INHERITED_NAMES), '{}')),
    () => frame(0x1, Buffer.from([0xc3, 0x28, 0xa0, 0xa1])), // invalid UTF-8 in a text frame
    () => frame(0x1, call('app.info', '{}'), { masked: false }),
    () => frame(0x3, r.bytes(10)), // reserved opcode
    () => frame(0x9, r.bytes(200)), // a ping over 125 bytes
    () => frame(0x8, Buffer.from([0x03, 0xe7])), // close with an invalid code
    () => frame(0x1, call('app.info', '{}'), { rsv: 2 }),
    () => frame(0x1, r.bytes(20), { fin: false }),
    () => frame(0x2, r.bytes(r.int(1, 70_000))),
    () => frame(0x1, Buffer.from(callText(1, 'app.info', `${'['.repeat(50_000)}${']'.repeat(50_000)}`))),
    () => r.bytes(r.int(1, 200)),
  ];
  return Buffer.concat(Array.from({ length: r.int(1, 4) }, () => r.pick(frames)()));
}

/** Fails with the end of the server's output when the process has died. */
function assertAlive(batch: number, stage: string): void {
  if (!server.alive()) throw new Error(`the server died during ${stage} of batch ${batch}:\n${server.output().slice(-3000)}`);
}

async function healthy(): Promise<boolean> {
  const outcome = await server.call('app.health', {});
  return outcome.ok && (outcome.value as { ok: boolean }).ok;
}

describe('request fuzzer (studio server process)', () => {
  it('survives every batch, answers health after each, gives nothing unauthenticated a 2xx, and never answers 500 or internal', { timeout: 240_000 }, async () => {
    const r = rng(FUZZ_SEED);
    const statuses = new Map<string, number>();
    const failures: string[] = [];
    let httpCases = 0;
    let rawWsCases = 0;
    let wsCalls = 0;
    let internal = 0;
    for (let batch = 0; batch < BATCHES; batch++) {
      // Raw HTTP: a few at a time, as a browser and scripts would.
      for (let i = 0; i < HTTP_PER_BATCH; i += 4) {
        const built = Array.from({ length: 4 }, () => build(r));
        const replies = await Promise.all(built.map((b) => raw(b.bytes, { hangUp: b.hangUp })));
        for (const [k, reply] of replies.entries()) {
          const b = built[k]!;
          httpCases++;
          const key = String(reply.status);
          statuses.set(key, (statuses.get(key) ?? 0) + 1);
          if (!b.authed && reply.status !== null && reply.status >= 101 && reply.status < 400) failures.push(`unauthenticated ${reply.status}: ${b.what}`);
          if (reply.status !== null && reply.status >= 500) failures.push(`${reply.status}: ${b.what}`);
          if (b.isApiCall && reply.status === 200 && /"type":"internal"/.test(reply.body)) {
            internal++;
            failures.push(`internal: ${b.what} ${reply.body.slice(0, 200)}`);
          }
        }
      }
      await new Promise((res) => setTimeout(res, 50)); // a crash takes a moment to show
      assertAlive(batch, 'raw HTTP');
      // Raw WebSocket: upgrade with or without the token, then hostile frames.
      for (let i = 0; i < RAW_WS_PER_BATCH; i++) {
        const withToken = r.bool(0.7);
        const head = [
          'GET /ws HTTP/1.1',
          `Host: 127.0.0.1:${server.port}`,
          'Upgrade: websocket',
          'Connection: Upgrade',
          'Sec-WebSocket-Version: 13',
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
          withToken ? `Authorization: Bearer ${server.token}` : 'Cookie: shira_token=%zz',
        ].join('\r\n');
        const reply = await raw(Buffer.concat([Buffer.from(`${head}\r\n\r\n`), rawWsFrames(r)]), { ms: 1500 });
        rawWsCases++;
        if (!withToken && reply.status === 101) failures.push('unauthenticated WebSocket upgrade succeeded');
        statuses.set(`ws-${reply.status}`, (statuses.get(`ws-${reply.status}`) ?? 0) + 1);
      }
      await new Promise((res) => setTimeout(res, 50));
      assertAlive(batch, 'raw WebSocket frames');
      // A real WebSocket with the token: hostile calls, each must get a tagged answer.
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`, { headers: { authorization: `Bearer ${server.token}` } });
      await new Promise<void>((ok, fail) => {
        ws.once('open', () => ok());
        ws.once('error', fail);
      });
      const answers = new Map<number, { ok: boolean; error?: { type: string } }>();
      ws.on('message', (data) => {
        const m = JSON.parse(String(data)) as { kind: string; id: number; ok: boolean; error?: { type: string } };
        if (m.kind === 'result') answers.set(m.id, m);
      });
      const ids: number[] = [];
      for (let i = 0; i < WS_CALLS_PER_BATCH; i++) {
        const id = batch * 1000 + i + 1;
        const name = r.pick([...Object.keys(api), ...INHERITED_NAMES]);
        ws.send(callText(id, name, hostileInput(r)));
        ids.push(id);
        wsCalls++;
      }
      const until = Date.now() + 20_000;
      while (ids.some((id) => !answers.has(id)) && Date.now() < until) await new Promise((res) => setTimeout(res, 20));
      ws.close();
      for (const id of ids) {
        const a = answers.get(id);
        if (!a) failures.push(`WebSocket call ${id} got no answer`);
        else if (!a.ok && a.error?.type === 'internal') {
          internal++;
          failures.push(`WebSocket call ${id}: internal`);
        }
      }
      // After every batch: the process is alive and its library healthy.
      await new Promise((res) => setTimeout(res, 50));
      assertAlive(batch, 'WebSocket calls');
      expect(await healthy()).toBe(true);
    }
    const summary = [...statuses]
      .sort()
      .map(([s, n]) => `${s}×${n}`)
      .join(' ');
    console.log(
      `request fuzzer: seed ${FUZZ_SEED}, ${BATCHES} batches, ${httpCases + rawWsCases + wsCalls} cases (${httpCases} raw HTTP, ${rawWsCases} raw WebSocket upgrades with hostile frames, ${wsCalls} WebSocket calls); crashes 0, internal answers ${internal}; statuses ${summary}`,
    );
    expect(failures.slice(0, 20)).toEqual([]);
    expect(server.alive()).toBe(true);
  });
});
