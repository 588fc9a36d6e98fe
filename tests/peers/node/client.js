#!/usr/bin/env node
// Scripted WebSocket client built on the Node `ws` package, used as an
// interop peer by the threadws test-suite.
//
// Usage:
//   node client.js URL [--subprotocol P]... [--compression]
//                      [--header "Name: value"]... [--origin ORIGIN]
//                      [--ca FILE]
//                      [--script JSON | --script-file PATH]
//                      [--timeout SECONDS] [--step-timeout SECONDS]
//
// For a wss:// URL, --ca FILE (PEM) is the certificate authority to trust
// (instead of the system's); the server's certificate is always verified.
//
// The script (a JSON array of steps, or {"steps": [...]}) is read from
// --script, --script-file or, when neither is given, from stdin.
//
// Steps (payloads are given as exactly one of "text", "hex" or "base64"):
//   {"op":"send", "text":"hi"}                  send a text message
//   {"op":"send", "hex":"00ff"}                 send a binary message
//   {"op":"send", "base64":"AP8="}              send a binary message
//       optional: "expect_echo": true  -> then wait for the identical echo
//                 "fin": false         -> send as a non-final fragment
//                 "compress": false    -> per-message compression off
//   {"op":"send_text", "text"|"data": "..."}    alias of send (text)
//   {"op":"send_binary", "hex"|"base64": "..."} alias of send (binary)
//   {"op":"expect_echo"}      next message must equal the last one sent
//                             (same type, same bytes)
//   {"op":"expect", "text"|"hex"|"base64": ...}  next message must match;
//                             "text" implies type text, hex/base64 binary
//                             unless "type" says otherwise
//   {"op":"recv", "count": 1} wait for the next N messages (any content)
//   {"op":"ping", "text"|"hex"|"base64": ...}  send a ping (payload optional)
//                             and wait for the pong with the same payload
//                             ("await_pong": false to not wait)
//   {"op":"close", "code":4000, "reason":"bye"}  start the closing handshake
//                             (code optional; "reason_hex" for raw bytes) and
//                             wait until the connection is closed
//   {"op":"wait_close"}       wait for the peer to close the connection
//   {"op":"sleep", "ms":100}
//   {"op":"terminate"}        drop the TCP connection without a close frame
// Every step accepts "timeout" (seconds) overriding --step-timeout.
//
// The script stops at the first failing step.  When the script ends with the
// connection still open the client closes it with 1000 ("auto_closed": true).
//
// Output: one JSON report on stdout, then exit status 0 (also when the
// connection or a step failed: look at "ok" and "errors").  Exit status 2
// means bad usage.  Report fields:
//   ok, url, connected, protocol, extensions, response_headers, http_status,
//   received: [{type:"text"|"binary", len, hex, sha256, text|base64}],
//   pings: [{hex}], pongs: [{hex}],
//   close: {code, reason, reason_hex, initiated_by:"client"|"server"} | null,
//   auto_closed, steps: [{index, op, ok, error?, ms}], errors: [..], elapsed_ms
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const WebSocket = require('ws');

function usage(msg) {
  if (msg) process.stderr.write(`client: ${msg}\n`);
  process.stderr.write(
    'usage: node client.js URL [--subprotocol P]... [--compression] ' +
      '[--header "Name: value"]... [--origin ORIGIN] [--ca FILE] ' +
      '[--script JSON | --script-file PATH] [--timeout S] [--step-timeout S]\n'
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    url: null,
    subprotocols: [],
    compression: false,
    headers: {},
    origin: null,
    ca: null,
    script: null,
    scriptFile: null,
    timeout: 30,
    stepTimeout: 10,
  };
  const need = (i, name) => {
    if (i + 1 >= argv.length) usage(`${name} needs a value`);
    return argv[i + 1];
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--subprotocol' || a === '--protocol') {
      opts.subprotocols.push(need(i, a));
      i++;
    } else if (a === '--compression') opts.compression = true;
    else if (a === '--no-compression') opts.compression = false;
    else if (a === '--header') {
      const h = need(i, a);
      i++;
      const c = h.indexOf(':');
      if (c <= 0) usage(`bad header ${JSON.stringify(h)}`);
      opts.headers[h.slice(0, c).trim()] = h.slice(c + 1).trim();
    } else if (a === '--origin') {
      opts.origin = need(i, a);
      i++;
    } else if (a === '--ca') {
      opts.ca = need(i, a);
      i++;
    } else if (a === '--script') {
      opts.script = need(i, a);
      i++;
    } else if (a === '--script-file') {
      opts.scriptFile = need(i, a);
      i++;
    } else if (a === '--timeout') {
      opts.timeout = Number(need(i, a));
      i++;
    } else if (a === '--step-timeout') {
      opts.stepTimeout = Number(need(i, a));
      i++;
    } else if (a === '-h' || a === '--help') usage();
    else if (!a.startsWith('--') && opts.url === null) opts.url = a;
    else usage(`unexpected argument ${JSON.stringify(a)}`);
  }
  if (!opts.url) usage('missing URL');
  if (!(opts.timeout > 0) || !(opts.stepTimeout > 0)) usage('bad timeout');
  return opts;
}

function readScript(opts) {
  let text;
  if (opts.script !== null) text = opts.script;
  else if (opts.scriptFile !== null) text = fs.readFileSync(opts.scriptFile, 'utf8');
  else text = fs.readFileSync(0, 'utf8');
  let script;
  try {
    script = JSON.parse(text);
  } catch (e) {
    usage(`script is not valid JSON: ${e.message}`);
  }
  if (script && !Array.isArray(script) && Array.isArray(script.steps)) script = script.steps;
  if (!Array.isArray(script)) usage('script must be a JSON array of steps');
  return script;
}

// Payload of a step: {type, buf} or null when the step carries none.
function stepPayload(step, defaultType) {
  const keys = ['text', 'data', 'hex', 'base64'].filter((k) => step[k] !== undefined);
  if (keys.length === 0) return null;
  if (keys.length > 1) throw new Error(`give only one of text/hex/base64, got ${keys}`);
  const k = keys[0];
  let type;
  let buf;
  if (k === 'text' || k === 'data') {
    if (typeof step[k] !== 'string') throw new Error(`"${k}" must be a string`);
    buf = Buffer.from(step[k], 'utf8');
    type = 'text';
  } else if (k === 'hex') {
    if (!/^([0-9a-fA-F]{2})*$/.test(step.hex)) throw new Error('bad hex payload');
    buf = Buffer.from(step.hex, 'hex');
    type = 'binary';
  } else {
    buf = Buffer.from(step.base64, 'base64');
    type = 'binary';
  }
  if (defaultType) type = defaultType;
  if (step.type) type = step.type;
  if (type !== 'text' && type !== 'binary') throw new Error(`bad type ${type}`);
  return { type, buf };
}

function describe(msg) {
  const out = {
    type: msg.type,
    len: msg.buf.length,
    hex: msg.buf.toString('hex'),
    sha256: crypto.createHash('sha256').update(msg.buf).digest('hex'),
  };
  if (msg.type === 'text') out.text = msg.buf.toString('utf8');
  else out.base64 = msg.buf.toString('base64');
  return out;
}

function short(buf) {
  const h = buf.toString('hex');
  return h.length > 64 ? `${h.slice(0, 64)}...(${buf.length} bytes)` : h || '(empty)';
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const script = readScript(opts);
  const t0 = Date.now();

  const report = {
    ok: false,
    url: opts.url,
    connected: false,
    protocol: null,
    extensions: null,
    response_headers: null,
    http_status: null,
    received: [],
    pings: [],
    pongs: [],
    close: null,
    auto_closed: false,
    steps: [],
    errors: [],
    elapsed_ms: 0,
  };

  let printed = false;
  function finish() {
    if (printed) return;
    printed = true;
    report.elapsed_ms = Date.now() - t0;
    report.ok = report.connected && report.errors.length === 0;
    process.stdout.write(`${JSON.stringify(report)}\n`, () => process.exit(0));
  }

  const globalTimer = setTimeout(() => {
    report.errors.push(`global timeout of ${opts.timeout}s exceeded`);
    try {
      if (ws) ws.terminate();
    } catch (e) {
      /* ignore */
    }
    finish();
  }, opts.timeout * 1000);

  // --- connection state ---------------------------------------------------
  const messages = []; // {type, buf}
  let msgCursor = 0;
  let pongCursor = 0;
  let closed = false;
  let closeRequestedByUs = false;
  const waiters = new Set();
  const wake = () => {
    for (const w of [...waiters]) w();
  };

  function waitUntil(cond, timeoutS, what, allowClosed = false) {
    return new Promise((resolve, reject) => {
      let timer = null;
      const check = () => {
        let v;
        try {
          v = cond();
        } catch (e) {
          cleanup();
          reject(e);
          return;
        }
        if (v) {
          cleanup();
          resolve(v);
        } else if (closed && !allowClosed) {
          cleanup();
          const c = report.close;
          reject(new Error(`connection closed (code ${c && c.code}) while waiting for ${what}`));
        }
      };
      const cleanup = () => {
        waiters.delete(check);
        if (timer) clearTimeout(timer);
      };
      timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutS}s waiting for ${what}`));
      }, timeoutS * 1000);
      waiters.add(check);
      check();
    });
  }

  const wsOptions = {
    perMessageDeflate: opts.compression,
    headers: opts.headers,
    handshakeTimeout: opts.stepTimeout * 1000,
  };
  if (opts.origin) wsOptions.origin = opts.origin;
  if (opts.ca) wsOptions.ca = fs.readFileSync(opts.ca);

  let ws;
  try {
    ws = new WebSocket(opts.url, opts.subprotocols, wsOptions);
  } catch (e) {
    report.errors.push(`cannot connect: ${e.message}`);
    clearTimeout(globalTimer);
    finish();
    return;
  }

  ws.on('upgrade', (res) => {
    report.http_status = res.statusCode;
    report.response_headers = res.headers;
  });
  ws.on('unexpected-response', (req, res) => {
    report.http_status = res.statusCode;
    report.response_headers = res.headers;
    report.errors.push(`unexpected HTTP response ${res.statusCode}`);
    // With this listener attached ws leaves the failed handshake to us: the
    // connection never opened, so report and stop right away.
    req.destroy();
    clearTimeout(globalTimer);
    finish();
  });
  ws.on('message', (data, isBinary) => {
    const buf = Buffer.isBuffer(data) ? data : Buffer.concat(data);
    const msg = { type: isBinary ? 'binary' : 'text', buf };
    messages.push(msg);
    report.received.push(describe(msg));
    wake();
  });
  ws.on('ping', (data) => {
    report.pings.push({ hex: data.toString('hex') });
    wake();
  });
  ws.on('pong', (data) => {
    report.pongs.push({ hex: data.toString('hex') });
    wake();
  });
  ws.on('error', (err) => {
    report.errors.push(`socket error: ${err.message}`);
    wake();
  });
  ws.on('close', (code, reason) => {
    closed = true;
    report.close = {
      code,
      reason: reason.toString('utf8'),
      reason_hex: reason.toString('hex'),
      initiated_by: closeRequestedByUs ? 'client' : report.connected ? 'server' : null,
    };
    wake();
  });

  // --- connect ------------------------------------------------------------
  try {
    await new Promise((resolve, reject) => {
      if (ws.readyState === WebSocket.OPEN) return resolve();
      const onOpen = () => {
        ws.off('close', onClose);
        resolve();
      };
      const onClose = () => {
        ws.off('open', onOpen);
        reject(new Error('connection failed before open'));
      };
      ws.once('open', onOpen);
      ws.once('close', onClose);
    });
    report.connected = true;
    report.protocol = ws.protocol;
    report.extensions = ws.extensions;
  } catch (e) {
    report.errors.push(e.message);
    clearTimeout(globalTimer);
    finish();
    return;
  }

  // --- run the script -----------------------------------------------------
  let lastSent = null;
  const nextMessage = (timeoutS, what) =>
    waitUntil(() => (msgCursor < messages.length ? messages[msgCursor++] : null), timeoutS, what);

  for (let i = 0; i < script.length; i++) {
    const step = script[i] || {};
    const op = step.op;
    const timeoutS = step.timeout !== undefined ? Number(step.timeout) : opts.stepTimeout;
    const entry = { index: i, op, ok: false };
    report.steps.push(entry);
    const ts = Date.now();
    try {
      switch (op) {
        case 'send':
        case 'send_text':
        case 'send_binary': {
          const defaultType = op === 'send_text' ? 'text' : op === 'send_binary' ? 'binary' : null;
          const p = stepPayload(step, defaultType);
          if (!p) throw new Error('send needs a text, hex or base64 payload');
          if (closed) throw new Error('connection is closed');
          const sendOpts = { binary: p.type === 'binary', fin: step.fin !== false };
          if (step.compress !== undefined) sendOpts.compress = !!step.compress;
          await new Promise((resolve, reject) =>
            ws.send(p.buf, sendOpts, (err) => (err ? reject(err) : resolve()))
          );
          lastSent = p;
          if (step.expect_echo) {
            const m = await nextMessage(timeoutS, 'echo');
            if (m.type !== p.type || !m.buf.equals(p.buf))
              throw new Error(
                `echo mismatch: sent ${p.type} ${short(p.buf)}, got ${m.type} ${short(m.buf)}`
              );
          }
          break;
        }
        case 'expect_echo': {
          if (!lastSent) throw new Error('expect_echo before any send');
          const m = await nextMessage(timeoutS, 'echo');
          if (m.type !== lastSent.type || !m.buf.equals(lastSent.buf))
            throw new Error(
              `echo mismatch: sent ${lastSent.type} ${short(lastSent.buf)}, ` +
                `got ${m.type} ${short(m.buf)}`
            );
          break;
        }
        case 'expect': {
          const p = stepPayload(step, null);
          if (!p) throw new Error('expect needs a text, hex or base64 payload');
          const m = await nextMessage(timeoutS, 'message');
          if (m.type !== p.type || !m.buf.equals(p.buf))
            throw new Error(
              `expected ${p.type} ${short(p.buf)}, got ${m.type} ${short(m.buf)}`
            );
          break;
        }
        case 'recv': {
          const n = step.count === undefined ? 1 : Number(step.count);
          for (let k = 0; k < n; k++) await nextMessage(timeoutS, `message ${k + 1}/${n}`);
          break;
        }
        case 'ping': {
          const p = stepPayload(step, 'binary');
          const payload = p ? p.buf : Buffer.alloc(0);
          if (closed) throw new Error('connection is closed');
          const hex = payload.toString('hex');
          const startPongs = report.pongs.length;
          await new Promise((resolve, reject) =>
            ws.ping(payload, undefined, (err) => (err ? reject(err) : resolve()))
          );
          if (step.await_pong !== false) {
            await waitUntil(
              () => {
                for (let k = Math.max(pongCursor, startPongs); k < report.pongs.length; k++) {
                  if (report.pongs[k].hex === hex) {
                    pongCursor = k + 1;
                    return true;
                  }
                }
                return false;
              },
              timeoutS,
              `pong ${hex || '(empty)'}`
            );
          }
          break;
        }
        case 'close': {
          if (!closed) {
            closeRequestedByUs = true;
            let reason;
            if (step.reason_hex !== undefined) reason = Buffer.from(step.reason_hex, 'hex');
            else if (step.reason !== undefined) reason = step.reason;
            if (step.code === undefined || step.code === null) ws.close();
            else ws.close(Number(step.code), reason);
          }
          await waitUntil(() => closed, timeoutS, 'close', true);
          break;
        }
        case 'wait_close':
          await waitUntil(() => closed, timeoutS, 'close from peer', true);
          break;
        case 'sleep':
          await new Promise((r) => setTimeout(r, Number(step.ms || 0)));
          break;
        case 'terminate':
          closeRequestedByUs = true;
          ws.terminate();
          await waitUntil(() => closed, timeoutS, 'terminate', true);
          break;
        default:
          throw new Error(`unknown op ${JSON.stringify(op)}`);
      }
      entry.ok = true;
    } catch (e) {
      entry.error = e.message;
      report.errors.push(`step ${i} (${op}): ${e.message}`);
    }
    entry.ms = Date.now() - ts;
    if (!entry.ok) break;
  }

  if (!closed) {
    report.auto_closed = true;
    closeRequestedByUs = true;
    try {
      ws.close(1000);
      await waitUntil(() => closed, 5, 'auto close', true);
    } catch (e) {
      report.errors.push(`auto close: ${e.message}`);
      ws.terminate();
    }
  }
  clearTimeout(globalTimer);
  finish();
}

main().catch((e) => {
  process.stderr.write(`client: internal error: ${e.stack || e}\n`);
  process.exit(1);
});
