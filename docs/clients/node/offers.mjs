// The offers of one dealer in one DDD, from carat-catalogd (Node standard library only).
//
// usage: node offers.mjs SOCKET DEALER DDD [--once]
// Prints the offers in R$, then (without --once) again at each change, following
// /v1/events. Exit: 1 error, 2 no such dealer or DDD, 3 not synced yet (--once).
import http from "node:http";

const once = process.argv.includes("--once");
const args = process.argv.slice(2).filter((a) => a !== "--once");
if (args.length !== 3) {
  console.error("usage: node offers.mjs SOCKET DEALER DDD [--once]");
  process.exit(1);
}
const [socketPath, dealer, ddd] = args;
const path = `/v1/catalogs/normal/dealers/${dealer}/ddds/${ddd}`;
let etag = null;

// Integer centavos as reais, 123456 -> "R$ 1.234,56" (integer arithmetic only).
function brl(centavos) {
  const cents = centavos % 100;
  const reais = String((centavos - cents) / 100).replace(/\B(?=(\d{3})+$)/g, ".");
  return `R$ ${reais},${String(cents).padStart(2, "0")}`;
}

function show(offers) {
  const lines = [`dealer ${offers.dealer_code}, DDD ${offers.ddd}, catalog ${offers.general_hash}`];
  if (offers.stale) lines.push(`warning: stale catalog, last confirmed by Carat at ${offers.checked_at}`);
  for (const category of offers.categories) {
    for (const r of category.amount_ranges) lines.push(`${r.amount_key}  ${brl(r.min_amount)} – ${brl(r.max_amount)}`);
    for (const f of category.fixed_amounts) lines.push(`${f.amount_key}  ${brl(f.amount)}`);
  }
  console.log(lines.join("\n"));
}

function get(p, headers) {
  return new Promise((resolve, reject) => {
    http.get({ socketPath, path: p, headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode, etag: res.headers.etag, body }));
    }).on("error", reject);
  });
}

// GETs the offers with If-None-Match; prints them if they changed.
async function readOffers() {
  const res = await get(path, etag ? { "If-None-Match": etag } : {});
  if (res.status === 304) return; // unchanged
  if (res.status === 200) {
    etag = res.etag;
    return show(JSON.parse(res.body));
  }
  const { code, message } = JSON.parse(res.body).error; // match on the code; the message is for people
  console.error(`error: ${code}: ${message}`);
  if (res.status === 503 && !once) return; // not synced yet: its catalog event will come
  process.exit({ 404: 2, 503: 3 }[res.status] ?? 1);
}

// Follows /v1/events; any event may change the offers: ask again (a 304 if not).
function follow() {
  let queue = Promise.resolve(); // one read at a time, in order
  const again = () => (queue = queue.then(readOffers).catch((e) => console.error(`error: ${e.message}`)));
  http.get({ socketPath, path: "/v1/events" }, (res) => {
    let buffer = "";
    res.setEncoding("utf8");
    res.on("data", (chunk) => {
      const lines = (buffer += chunk).split("\n");
      buffer = lines.pop();
      // ": connected" comes first: subscribed, so read now.
      for (const line of lines) if (line.startsWith(": connected") || line.startsWith("data:")) again();
    });
    res.on("end", () => setTimeout(follow, 5000)); // the daemon stopped or restarts: reconnect
  }).on("error", (e) => {
    console.error(`error: ${socketPath}: ${e.message}`);
    setTimeout(follow, 5000);
  });
}

if (once) readOffers().catch((e) => (console.error(`error: ${socketPath}: ${e.message}`), process.exit(1)));
else follow();
