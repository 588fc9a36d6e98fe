#!/usr/bin/env node
// Fan-out load for bench/backplane_bench.py: N subscribers spread over several servers, one publisher.
//
//   node fanout.js --urls ws://h:p1/,ws://h:p2/ --pub ws://h:p1/pub --conns 1000 --size 64
//                  --window 8 --duration 5 --warmup 1
//
// The subscribers connect round-robin to --urls and only read. The publisher sends binary
// messages to --pub, whose server broadcasts each one to its hub; a message is done when every
// subscriber has it, and at most --window messages are under way at once (so the servers' send
// queues stay short and no one is dropped for being slow). Each message carries its number and
// its send time; latency is send to receipt, per delivery, in this one process (one clock).
// Before measuring, probe messages go out until every subscriber has had one (every server has
// registered its connections and, with a backplane, subscribed). One JSON line at the end.
'use strict';

const WebSocket = require('ws');

function parseArgs(argv) {
  const opts = { urls: '', pub: '', conns: 1000, size: 64, window: 8, duration: 5, warmup: 1, concurrency: 50,
    timeout: 60 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in opts)) throw new Error(`unknown option --${key}`);
    opts[key] = typeof opts[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  return opts;
}

const now = () => Number(process.hrtime.bigint()) / 1000; // microseconds

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function open(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 0 });
    ws.binaryType = 'nodebuffer';
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const urls = opts.urls.split(',').filter(Boolean);
  const n = opts.conns;
  const subs = new Array(n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      subs[i] = await open(urls[i % urls.length]);
    }
  };
  const t0 = now();
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  const connectSeconds = (now() - t0) / 1e6;
  const pub = await open(opts.pub);

  // Message layout: uint32 number (0xffffffff for a probe), float64 send time (µs), padding.
  const size = Math.max(12, opts.size);
  const counts = new Map(); // number -> receivers that have it
  const latencies = [];
  let closed = 0;
  let done = 0;
  let sent = 0;
  let probing = true;
  let probed = 0; // subscribers that got a probe
  const gotProbe = new Uint8Array(n);
  let measureFrom = Infinity;
  let measureTo = Infinity;
  let deliveries = 0;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });

  const send = (number) => {
    const buf = Buffer.alloc(size);
    buf.writeUInt32BE(number, 0);
    buf.writeDoubleBE(now(), 4);
    pub.send(buf, { binary: true });
  };
  const sendNext = () => {
    if (now() >= measureTo) { if (done === sent) finish(); return; }
    send(sent++);
  };

  subs.forEach((ws, index) => {
    ws.on('message', (msg) => {
      const t = now();
      const number = msg.readUInt32BE(0);
      if (number === 0xffffffff) {
        if (probing && !gotProbe[index]) { gotProbe[index] = 1; probed++; }
        return;
      }
      const start = msg.readDoubleBE(4);
      if (start >= measureFrom && t <= measureTo) {
        deliveries++;
        if (index % 10 === 0) latencies.push(t - start); // a tenth of the subscribers, to bound memory
      }
      const count = (counts.get(number) || 0) + 1;
      if (count === n - closed) { counts.delete(number); done++; sendNext(); } else counts.set(number, count);
    });
    ws.on('close', () => { closed++; });
    ws.on('error', () => {});
  });

  // Probe until everyone is reachable (registered on its server, its server subscribed).
  const probeDeadline = now() + opts.timeout * 1e6;
  while (probed < n) {
    if (now() > probeDeadline) throw new Error(`only ${probed} of ${n} subscribers reachable`);
    send(0xffffffff);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  probing = false;
  await new Promise((resolve) => setTimeout(resolve, 200)); // let late probes drain

  measureFrom = now() + opts.warmup * 1e6;
  measureTo = measureFrom + opts.duration * 1e6;
  for (let i = 0; i < opts.window; i++) send(sent++);
  const stall = setTimeout(() => finish(), (opts.warmup + opts.duration + 30) * 1000);
  await finished;
  clearTimeout(stall);

  latencies.sort((a, b) => a - b);
  const result = {
    mode: 'fanout', conns: n, servers: urls.length, size, window: opts.window, seconds: opts.duration,
    connect_seconds: connectSeconds, messages: done, deliveries, deliveries_per_s: deliveries / opts.duration,
    closed, p50_us: percentile(latencies, 50), p99_us: percentile(latencies, 99), samples: latencies.length,
  };
  for (const ws of [pub, ...subs]) ws.terminate();
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ error: String((err && err.stack) || err) }) + '\n');
  process.exit(1);
});
