// A small static file server for the built site (dist/): correct MIME types (WebAssembly
// streaming needs application/wasm) and the same Content-Security-Policy as index.html, sent as a
// header too so the engine worker's scripts carry it; COOP/COEP, so the page is cross-origin
// isolated and may start the engine's threaded build (wasm threads need shared memory). Used by
// serve.sh and the browser tests.
// Usage: node static-server.mjs <folder> [port] [host]
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".tsv": "text/tab-separated-values; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/plain; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".webp": "image/webp",
  ".gif": "image/gif",
  ".ico": "image/x-icon",
};

export const CSP =
  "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' blob:; " +
  "connect-src 'self'; worker-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'none'; " +
  "frame-ancestors 'none'";

// The file under `base` a URL path names, or an HTTP status: 400 for a path that does not decode
// (malformed percent-encoding) or holds a NUL or a backslash, 404 for one that leaves `base`
// (`..`) or names nothing there.
export function resolvePath(base, urlPath) {
  let rel;
  try {
    rel = decodeURIComponent(new URL(urlPath, "http://x").pathname);
  } catch {
    return 400;
  }
  if (rel.includes("\0") || rel.includes("\\")) return 400;
  const file = path.join(base, rel);
  if (file !== base && !file.startsWith(base + path.sep)) return 404;
  return file;
}

// What makes a page cross-origin isolated; everything the app loads is its own origin's.
export const ISOLATION = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
};

function handle(base, req, res, isolated) {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405).end();
    return;
  }
  let file = resolvePath(base, req.url);
  if (typeof file === "number") {
    res.writeHead(file, { "content-type": "text/plain" }).end(file === 400 ? "bad request" : "not found");
    return;
  }
  fs.stat(file, (err, st) => {
    if (!err && st.isDirectory()) {
      file = path.join(file, "index.html");
      fs.stat(file, (err2, st2) => send(req, res, file, err2, st2, isolated));
    } else send(req, res, file, err, st, isolated);
  });
}

function send(req, res, file, err, st, isolated) {
  if (err || !st.isFile()) {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found");
    return;
  }
  res.writeHead(200, {
    "content-type": TYPES[path.extname(file).toLowerCase()] || "application/octet-stream",
    "content-length": st.size,
    "cache-control": "no-cache",
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    ...(isolated ? ISOLATION : {}),
  });
  if (req.method === "HEAD") res.end();
  else {
    const stream = fs.createReadStream(file);
    // A file that vanishes or fails mid-way ends this response, not the server.
    stream.on("error", () => res.destroy());
    stream.pipe(res);
  }
}

// `isolated: false` leaves COOP/COEP out (the tests' one-thread runs; a host without headers is
// isolated by the service worker from the second visit on).
export function serve(root, port = 0, host = "127.0.0.1", { isolated = true } = {}) {
  const base = path.resolve(root);
  const server = http.createServer((req, res) => {
    // A handler that throws answers 500 and the server keeps serving (a bad request never ends it).
    try {
      handle(base, req, res, isolated);
    } catch {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    }
  });
  // A malformed request line or header is answered 400 by Node; a dropped connection is ignored.
  server.on("clientError", (err, socket) => {
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
    else socket.destroy();
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      const { port: p } = server.address();
      resolve({ server, url: `http://${host === "0.0.0.0" ? "localhost" : host}:${p}/` });
    });
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const [root = "dist", port = "8080", host = "127.0.0.1"] = process.argv.slice(2);
  const { url } = await serve(root, Number(port), host);
  console.log(`brivl is served at ${url}  (Ctrl+C stops it)`);
}
