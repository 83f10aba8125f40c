// Offline support for the app shell: same-origin GETs go to the network first and fall back to
// the last copy cached here. Models are kept by the app itself (in the origin private file
// system), photos never leave IndexedDB, so both are left alone.
// What it serves also carries COOP/COEP, so that on a static host that cannot send headers the
// page is cross-origin isolated from its second load on (the engine's threaded build needs it).
const SHELL = "brivl-shell-v1";

function isolated(r) {
  if (r.type !== "basic" && r.type !== "default") return r;
  const headers = new Headers(r.headers);
  headers.set("Cross-Origin-Opener-Policy", "same-origin");
  headers.set("Cross-Origin-Embedder-Policy", "require-corp");
  return new Response(r.body, { status: r.status, statusText: r.statusText, headers });
}

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname.includes("/models/") || url.pathname.includes("/demo/")) return;
  e.respondWith(
    fetch(e.request)
      .then((r) => {
        if (r.ok) {
          const copy = r.clone();
          caches.open(SHELL).then((c) => c.put(e.request, copy));
        }
        return isolated(r);
      })
      .catch(() => caches.match(e.request).then((r) => (r ? isolated(r) : Response.error()))),
  );
});
