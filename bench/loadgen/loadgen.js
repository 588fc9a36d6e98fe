#!/usr/bin/env node
// Load generator for the threadws benchmark suite, built on the `ws` package.
//
// One process, one event loop: it drives any WebSocket echo server the same way,
// so every server is measured by the same client. Modes:
//
//   pingpong   --conns N --size B --duration S     each connection: send, wait for the echo, repeat
//   stream     --conns N --size B --inflight K      each connection keeps K messages in flight
//   handshake  --conns C --duration S               C loops of: connect, one 64 B echo, close
//   hold       --conns N --size B --concurrency K   open N connections, K handshakes at a time (each
//                                                   echoes once), then send one more message on every
//                                                   one and wait for all the echoes; hold them until
//                                                   stdin closes or says "close"
//   echo-server --port P                            a plain `ws` echo server (for the client-side scenario)
//
// A wss:// --url takes --ca FILE: the PEM certificate authority the server's
// certificate must chain to (it is always verified).
//
// The result is one JSON object on the last line of stdout. Latencies are in
// microseconds; only messages sent after the warm-up and answered before the
// end of the measuring window count. `received_total` / `handshakes_total` count
// everything from the first connect to the end, warm-up included, so that the
// runner can divide the server's CPU over the whole run by them.
'use strict';

const fs = require('fs');
const WebSocket = require('ws');

function parseArgs(argv) {
  const opts = {
    mode: 'pingpong', url: 'ws://127.0.0.1:8765/', conns: 1, size: 64, inflight: 1,
    duration: 5, warmup: 1, port: 0, concurrency: 64, timeout: 120, echoTimeout: 60, ca: '',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    const value = argv[i + 1];
    if (!(key in opts)) throw new Error(`unknown option --${key}`);
    opts[key] = typeof opts[key] === 'number' ? Number(value) : value;
  }
  opts.tls = opts.ca ? { ca: fs.readFileSync(opts.ca) } : {}; // for every client connection
  return opts;
}

const now = () => Number(process.hrtime.bigint()) / 1000; // microseconds

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

function summarize(latencies) {
  const sorted = Float64Array.from(latencies).sort();
  return {
    samples: sorted.length,
    p50_us: percentile(sorted, 50),
    p99_us: percentile(sorted, 99),
    max_us: sorted.length ? sorted[sorted.length - 1] : null,
  };
}

function connect(opts) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(opts.url, { perMessageDeflate: false, skipUTF8Validation: true, maxPayload: 0, ...opts.tls });
    ws.binaryType = 'nodebuffer';
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function payload(size) {
  const buf = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) buf[i] = (i * 31 + 7) & 0xff;
  return buf;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// pingpong and stream: the same loop, with K = 1 for ping-pong.
async function runTraffic(opts) {
  const inflight = opts.mode === 'pingpong' ? 1 : opts.inflight;
  const conns = await Promise.all(Array.from({ length: opts.conns }, () => connect(opts)));
  const data = payload(opts.size);
  const latencies = [];
  let counted = 0;
  let received = 0;
  let errors = 0;
  const t0 = now();
  const measureFrom = t0 + opts.warmup * 1e6;
  const measureTo = measureFrom + opts.duration * 1e6;
  let running = true;

  await Promise.all(conns.map((ws) => new Promise((resolve) => {
    const sent = []; // send times, FIFO: an echo server answers in order
    let outstanding = 0;
    const sendOne = () => {
      sent.push(now());
      outstanding++;
      ws.send(data, { binary: true });
    };
    ws.on('message', (msg) => {
      const t = now();
      const start = sent.shift();
      outstanding--;
      received++;
      if (msg.length !== opts.size) errors++;
      if (start >= measureFrom && t <= measureTo) {
        latencies.push(t - start);
        counted++;
      }
      if (running && t < measureTo) sendOne();
      else if (outstanding === 0) resolve();
    });
    ws.on('error', () => { errors++; resolve(); });
    ws.on('close', () => resolve());
    for (let i = 0; i < inflight; i++) sendOne();
  })));
  running = false;
  const elapsed = (measureTo - measureFrom) / 1e6;
  await Promise.all(conns.map((ws) => new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve();
    ws.once('close', resolve);
    ws.close(1000);
    setTimeout(() => { ws.terminate(); resolve(); }, 5000).unref();
  })));
  const result = {
    mode: opts.mode, conns: opts.conns, size: opts.size, inflight, seconds: elapsed,
    messages: counted, msgs_per_s: counted / elapsed, received_total: received,
    mb_per_s: (counted * opts.size) / elapsed / 1e6, errors, ...summarize(latencies),
  };
  emit(result);
}

async function runHandshake(opts) {
  const data = payload(64);
  const latencies = [];
  let done = 0;
  let total = 0;
  let errors = 0;
  const t0 = now();
  const measureFrom = t0 + opts.warmup * 1e6;
  const measureTo = measureFrom + opts.duration * 1e6;
  const once = () => new Promise((resolve) => {
    const start = now();
    const ws = new WebSocket(opts.url, { perMessageDeflate: false, ...opts.tls });
    let ok = false;
    ws.on('open', () => ws.send(data, { binary: true }));
    ws.on('message', () => { ok = true; ws.close(1000); });
    ws.on('error', () => {});
    ws.on('close', () => {
      const t = now();
      if (!ok) errors++;
      else total++;
      if (ok && start >= measureFrom && t <= measureTo) { latencies.push(t - start); done++; }
      resolve();
    });
  });
  const loop = async () => { while (now() < measureTo) await once(); };
  await Promise.all(Array.from({ length: opts.conns }, loop));
  const elapsed = (measureTo - measureFrom) / 1e6;
  emit({ mode: 'handshake', conns: opts.conns, seconds: elapsed, handshakes: done,
    handshakes_per_s: done / elapsed, handshakes_total: total, errors, ...summarize(latencies) });
}

async function runHold(opts) {
  const data = payload(opts.size);
  const conns = [];
  let next = 0;
  let held = 0;
  let failed = 0;
  let firstError = null;
  const t0 = now();
  const deadline = t0 + opts.timeout * 1e6;
  const openOne = () => new Promise((resolve) => {
    const ws = new WebSocket(opts.url, { perMessageDeflate: false, handshakeTimeout: 30000, ...opts.tls });
    let echoed = false;
    let settled = false;
    // A connection that hasn't echoed within 30 s (or by the deadline) counts as failed.
    const giveUp = setTimeout(() => {
      if (!firstError) firstError = 'no echo within 30 s';
      ws.terminate();
    }, Math.max(1000, Math.min(30000, (deadline - now()) / 1000)));
    ws.on('open', () => ws.send(data, { binary: true }));
    ws.on('message', () => {
      if (!echoed) { echoed = true; clearTimeout(giveUp); held++; conns.push(ws); resolve(); }
    });
    ws.on('error', (err) => { if (!firstError) firstError = String(err.message || err); });
    ws.on('close', () => {
      clearTimeout(giveUp);
      if (!echoed) { if (!settled) { settled = true; failed++; resolve(); } } else held--;
    });
  });
  // At most `concurrency` handshakes in progress, so small listen backlogs don't drop SYNs.
  const worker = async () => {
    while (next < opts.conns && now() < deadline) {
      next++;
      await openOne();
    }
  };
  // Report at the deadline even if some handshakes are still hanging.
  await Promise.race([
    Promise.all(Array.from({ length: opts.concurrency }, worker)),
    new Promise((resolve) => setTimeout(resolve, Math.max(0, deadline - now()) / 1000 + 5000).unref()),
  ]);
  const seconds = (now() - t0) / 1e6;
  emit({ event: 'held', mode: 'hold', target: opts.conns, held, failed, seconds, first_error: firstError });
  // All echoing: one more message on every held connection at once; count the echoes within --echoTimeout s.
  const t1 = now();
  let echoed = 0;
  let lastEcho = 0;
  await Promise.race([
    Promise.all(conns.map((ws) => new Promise((resolve) => {
      if (ws.readyState !== WebSocket.OPEN) return resolve();
      ws.once('message', () => { echoed++; lastEcho = now(); resolve(); });
      ws.once('close', resolve);
      ws.send(data, { binary: true });
    }))),
    new Promise((resolve) => setTimeout(resolve, opts.echoTimeout * 1000).unref()),
  ]);
  emit({ event: 'echoed', mode: 'hold', held, echoed, seconds: (now() - t1) / 1e6,
    last_echo_seconds: echoed ? (lastEcho - t1) / 1e6 : null });
  // Hold until the runner has read the server's numbers.
  await new Promise((resolve) => {
    process.stdin.on('data', (chunk) => { if (String(chunk).includes('close')) resolve(); });
    process.stdin.on('end', resolve);
  });
  const stillOpen = conns.filter((ws) => ws.readyState === WebSocket.OPEN).length;
  await Promise.all(conns.map((ws) => new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve();
    ws.once('close', resolve);
    ws.terminate();
  })));
  emit({ mode: 'hold', target: opts.conns, held, still_open: stillOpen, failed, seconds, first_error: firstError });
}

function runEchoServer(opts) {
  const wss = new WebSocket.WebSocketServer({ host: '127.0.0.1', port: opts.port, perMessageDeflate: false,
    maxPayload: 64 << 20 });
  wss.on('connection', (ws) => {
    ws.on('message', (msg, isBinary) => ws.send(msg, { binary: isBinary }));
    ws.on('error', () => {});
  });
  wss.on('listening', () => console.log(`READY ${wss.address().port}`));
  process.on('SIGTERM', () => process.exit(0));
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.mode === 'pingpong' || opts.mode === 'stream') await runTraffic(opts);
  else if (opts.mode === 'handshake') await runHandshake(opts);
  else if (opts.mode === 'hold') await runHold(opts);
  else if (opts.mode === 'echo-server') return runEchoServer(opts);
  else throw new Error(`unknown mode ${opts.mode}`);
  process.exit(0);
}

main().catch((err) => {
  emit({ error: String(err && err.stack || err) });
  process.exit(1);
});
