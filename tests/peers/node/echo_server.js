#!/usr/bin/env node
// WebSocket echo server built on the Node `ws` package, used as an interop
// peer by the threadws test-suite.
//
// Usage:
//   node echo_server.js [PORT] [--host HOST] [--offer-compression]
//                       [--subprotocols a,b] [--control]
//                       [--cert FILE --key FILE]
//
//   PORT                 TCP port to listen on; 0 (default) picks a free one.
//   --host HOST          address to bind (default 127.0.0.1).
//   --offer-compression  accept permessage-deflate when the client offers it
//                        (off by default: no extension is negotiated).
//   --subprotocols a,b   subprotocols the server supports, in preference
//                        order; the first one the client also offers is
//                        selected.  Without this flag the first subprotocol
//                        offered by the client is accepted (ws default).
//   --exit-on-stdin-eof  exit when stdin reaches EOF (the Python helper uses
//                        this so the server never outlives its parent).
//   --cert FILE --key FILE  serve wss:// (an https server under the
//                        WebSocketServer) with this PEM certificate chain and
//                        key; "tls_error" events report failed TLS handshakes.
//   --control            text messages starting with "!" are commands instead
//                        of being echoed:  "!close CODE REASON..." makes the
//                        server start the closing handshake,  "!ping PAYLOAD"
//                        sends a ping,  "!terminate" drops the TCP connection.
//
// Stdout protocol (one line each, flushed immediately):
//   LISTENING <port>                 once the socket is listening (first line)
//   EVENT {json}                     one per event, e.g.
//      {"event":"connection","id":1,"path":"/x","headers":{...},
//       "protocol":"chat","extensions":"permessage-deflate; ..."}
//      {"event":"message","id":1,"type":"text"|"binary","len":5,
//       "sha256":"...","hex":"..."}     (hex only for messages <= 64 KiB)
//      {"event":"ping","id":1,"hex":"..."}
//      {"event":"close","id":1,"code":4000,"reason":"bye","reason_hex":"627965",
//       "initiated_by":"client"}   (code 1005 = close frame without a code,
//                                   1006 = no close frame at all)
//      {"event":"error","id":1,"message":"..."}
//      {"event":"tls_error","message":"...","code":"..."}   (with --cert only)
// Everything is echoed back with the same opcode (text as text, binary as
// binary); the close code/reason sent by the peer is recorded in the "close"
// event.  The process exits on SIGTERM/SIGINT (and on stdin EOF when asked).
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const https = require('https');
const { WebSocketServer } = require('ws');

function usage(msg) {
  if (msg) process.stderr.write(`echo_server: ${msg}\n`);
  process.stderr.write(
    'usage: node echo_server.js [PORT] [--host HOST] [--offer-compression] ' +
      '[--subprotocols a,b] [--control] [--exit-on-stdin-eof] [--cert FILE --key FILE]\n'
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    port: 0,
    host: '127.0.0.1',
    compression: false,
    subprotocols: null,
    control: false,
    exitOnStdinEof: false,
    cert: null,
    key: null,
  };
  let portSeen = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--offer-compression' || a === '--compression') opts.compression = true;
    else if (a === '--no-compression') opts.compression = false;
    else if (a === '--control') opts.control = true;
    else if (a === '--exit-on-stdin-eof') opts.exitOnStdinEof = true;
    else if (a === '--host') {
      if (i + 1 >= argv.length) usage('--host needs a value');
      opts.host = argv[++i];
    } else if (a === '--cert' || a === '--key') {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      opts[a.slice(2)] = argv[++i];
    } else if (a === '--subprotocols') {
      if (i + 1 >= argv.length) usage('--subprotocols needs a value');
      opts.subprotocols = argv[++i].split(',').map((s) => s.trim()).filter(Boolean);
    } else if (a === '-h' || a === '--help') usage();
    else if (/^\d+$/.test(a) && !portSeen) {
      opts.port = Number(a);
      portSeen = true;
    } else usage(`unexpected argument ${JSON.stringify(a)}`);
  }
  if (opts.port > 65535) usage('port out of range');
  if (!opts.cert !== !opts.key) usage('--cert and --key go together');
  return opts;
}

function emit(obj) {
  process.stdout.write(`EVENT ${JSON.stringify(obj)}\n`);
}

function main() {
  const opts = parseArgs(process.argv.slice(2));

  const serverOpts = {
    host: opts.host,
    port: opts.port,
    perMessageDeflate: opts.compression,
    clientTracking: true,
  };
  if (opts.subprotocols) {
    serverOpts.handleProtocols = (offered /* Set */) => {
      for (const p of opts.subprotocols) if (offered.has(p)) return p;
      return false;
    };
  }

  // wss://: the WebSocketServer rides on an https server, which listens instead.
  let tlsServer = null;
  if (opts.cert) {
    tlsServer = https.createServer({ cert: fs.readFileSync(opts.cert), key: fs.readFileSync(opts.key) });
    tlsServer.on('tlsClientError', (err) => {
      emit({ event: 'tls_error', message: String(err.message || err), code: err.code });
    });
    delete serverOpts.host;
    delete serverOpts.port;
    serverOpts.server = tlsServer;
  }

  const wss = new WebSocketServer(serverOpts);
  if (tlsServer) tlsServer.listen(opts.port, opts.host);
  let nextId = 1;

  wss.on('listening', () => {
    process.stdout.write(`LISTENING ${wss.address().port}\n`);
  });

  wss.on('error', (err) => {
    process.stderr.write(`echo_server: server error: ${err.stack || err}\n`);
    process.exit(1);
  });

  wss.on('wsClientError', (err, socket, req) => {
    emit({ event: 'handshake_error', path: req.url, message: String(err.message || err) });
    // With a listener attached ws leaves the reply to us.
    if (!socket.destroyed) {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    }
  });

  wss.on('connection', (ws, req) => {
    const id = nextId++;
    let closeStartedHere = false;
    emit({
      event: 'connection',
      id,
      path: req.url,
      headers: req.headers,
      protocol: ws.protocol,
      extensions: ws.extensions,
    });

    ws.on('message', (data, isBinary) => {
      // `data` is a Buffer (or an array of Buffers/ArrayBuffer depending on
      // binaryType; the default "nodebuffer" gives a single Buffer).
      const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
      emit({
        event: 'message',
        id,
        type: isBinary ? 'binary' : 'text',
        len: buf.length,
        sha256: crypto.createHash('sha256').update(buf).digest('hex'),
        hex: buf.length <= 65536 ? buf.toString('hex') : undefined,
      });
      if (opts.control && !isBinary && buf[0] === 0x21 /* "!" */) {
        const text = buf.toString('utf8');
        const sp = text.indexOf(' ');
        const cmd = sp < 0 ? text.slice(1) : text.slice(1, sp);
        const rest = sp < 0 ? '' : text.slice(sp + 1);
        if (cmd === 'close') {
          const m = /^(\d+)?\s?([\s\S]*)$/.exec(rest);
          closeStartedHere = true;
          if (m && m[1]) ws.close(Number(m[1]), m[2] || '');
          else ws.close();
          return;
        }
        if (cmd === 'ping') {
          ws.ping(Buffer.from(rest, 'utf8'));
          return;
        }
        if (cmd === 'terminate') {
          closeStartedHere = true;
          ws.terminate();
          return;
        }
      }
      ws.send(buf, { binary: isBinary });
    });

    ws.on('ping', (data) => {
      emit({ event: 'ping', id, hex: data.toString('hex') });
    });

    ws.on('pong', (data) => {
      emit({ event: 'pong', id, hex: data.toString('hex') });
    });

    ws.on('error', (err) => {
      emit({ event: 'error', id, message: String(err.message || err), code: err.code });
    });

    ws.on('close', (code, reason) => {
      emit({
        event: 'close',
        id,
        code,
        reason: reason.toString('utf8'),
        reason_hex: reason.toString('hex'),
        initiated_by: closeStartedHere ? 'server' : 'client',
      });
    });
  });

  let stopping = false;
  function shutdown() {
    if (stopping) return;
    stopping = true;
    for (const client of wss.clients) client.terminate();
    if (tlsServer) tlsServer.close();
    wss.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  }
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  if (opts.exitOnStdinEof) {
    // Exit when the parent closes our stdin (or dies).
    process.stdin.on('end', shutdown);
    process.stdin.on('error', shutdown);
    process.stdin.resume();
  }
}

main();
