// The development server (www/tools/static-server.mjs) answers bad requests with 400 or 404 and
// keeps serving: a NUL in the path, malformed percent-encoding, `..` traversal (plain and encoded),
// a malformed request line.
//
//   node tests/browser/static-server.test.mjs

import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { serve } from "../../www/tools/static-server.mjs";

function check(cond, msg) {
  if (!cond) throw new Error(`FAILED: ${msg}`);
  console.log(`[static-server] ok: ${msg}`);
}

// GET with the path sent exactly as written (no client-side normalisation).
function get(port, rawPath) {
  return new Promise((resolve, reject) => {
    const r = http.request({ host: "127.0.0.1", port, path: rawPath, method: "GET" }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    r.on("error", reject);
    r.end();
  });
}

// Bytes written to the socket as they are; resolves with the status line's code.
function raw(port, text) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => s.write(text));
    let got = "";
    s.on("data", (d) => (got += d));
    s.on("end", () => resolve(Number((got.match(/^HTTP\/1\.1 (\d+)/) || [])[1] || 0)));
    s.on("error", reject);
  });
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), "brivl-static-"));
const site = path.join(work, "site");
fs.mkdirSync(path.join(site, "sub"), { recursive: true });
fs.writeFileSync(path.join(site, "index.html"), "<!DOCTYPE html><title>ok</title>");
fs.writeFileSync(path.join(site, "sub", "index.html"), "sub");
fs.writeFileSync(path.join(work, "secret.txt"), "secret");

const { server, url } = await serve(site);
const port = new URL(url).port;
try {
  const ok = await get(port, "/");
  check(ok.status === 200 && ok.body.includes("<title>ok</title>"), "GET / serves index.html");
  check((await get(port, "/sub/")).body === "sub", "a folder serves its index.html");
  // COOP/COEP (the page may share wasm memory with workers), unless asked not to.
  check(ok.headers["cross-origin-opener-policy"] === "same-origin" && ok.headers["cross-origin-embedder-policy"] === "require-corp",
    "responses carry COOP same-origin and COEP require-corp");
  const plain = await serve(site, 0, "127.0.0.1", { isolated: false });
  const noIso = await get(new URL(plain.url).port, "/");
  plain.server.close();
  check(noIso.status === 200 && !("cross-origin-opener-policy" in noIso.headers) && !("cross-origin-embedder-policy" in noIso.headers),
    "isolated: false leaves them out");
  const bad = [
    ["/%00", [400]],
    ["/index.html%00.png", [400]],
    ["/%E0%A4%A", [400]],
    ["/%", [400]],
    ["/%zz", [400]],
    ["/../secret.txt", [400, 404]],
    ["/..%2fsecret.txt", [400, 404]],
    ["/%2e%2e/secret.txt", [400, 404]],
    ["/sub/..%2f..%2fsecret.txt", [400, 404]],
    ["/..%5csecret.txt", [400, 404]],
    ["/missing.js", [404]],
  ];
  for (const [p, want] of bad) {
    const r = await get(port, p);
    check(want.includes(r.status) && !r.body.includes("secret"), `${p} answers ${r.status}`);
  }
  const line = await raw(port, "GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n");
  check(line === 400, `a request line with a raw NUL answers ${line}`);
  const again = await get(port, "/");
  check(again.status === 200, "the server keeps serving after the bad requests");
  console.log("[static-server] all checks passed");
} finally {
  server.close();
  fs.rmSync(work, { recursive: true, force: true });
}
