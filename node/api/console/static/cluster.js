// The cluster page: every peer with its state, zone, weight, fill, chunks and what it is
// doing, refreshed every few seconds; the ring's evenness; and the ring drawn as a circle
// (ring.js), with the arcs a newcomer would take.

import { call } from "./api.js";
import { bytes, date, failure, h, show, shortId } from "./dom.js";
import { drawRing } from "./ring.js";

const REFRESH_MS = 2000;

function fill(peer) {
  // capacity: the peer's --max-bytes when it has one, else its disk's size
  const capacity = peer.capacity_bytes || peer.disk_total_bytes || 0;
  const fraction = capacity ? Math.min(1, peer.used_bytes / capacity) : 0;
  const bar = h("span", { class: "bar" }, h("span", { class: "used" }));
  bar.firstChild.style.width = `${(fraction * 100).toFixed(1)}%`;
  return h("td", { class: "fill" }, bar, ` ${bytes(peer.used_bytes)} of ${bytes(capacity)}`);
}

// What the peer's background work is doing now (each peer gossips its own figures).
function activity(peer) {
  const moves = peer.rebalance || {};
  const scrub = peer.scrub || {};
  const parts = [];
  if (moves.remaining_bytes > 0 || moves.pending > 0) {
    parts.push(`rebalancing: ${bytes(moves.remaining_bytes)} left, ${moves.pending} queued`);
  }
  if (peer.repair_queued > 0) parts.push(`repair: ${peer.repair_queued} queued`);
  if (scrub.pass_chunks > 0) parts.push(`scrub: ${scrub.pass_checked}/${scrub.pass_chunks} chunks`);
  if (peer.deletions_pending > 0) parts.push(`${peer.deletions_pending} deletions pending`);
  if (parts.length) return parts.join("; ");
  return moves.moves ? `idle (${moves.moves} chunks moved)` : "idle";
}

function share(peer) {
  if (peer.token_share == null || !peer.fair_share) return "";
  const ratio = peer.token_share / peer.fair_share;
  return `${(peer.token_share * 100).toFixed(1)}% (×${ratio.toFixed(2)})`;
}

function peersTable(cluster) {
  const rows = cluster.peers.map((peer) =>
    h(
      "tr",
      { class: `peer state-${peer.state}`, "data-peer": peer.id },
      h("td", {}, h("code", { title: peer.id }, shortId(peer.id)), peer.id === cluster.self ? " (this peer)" : ""),
      h("td", {}, h("a", { href: `${peer.url}/ui/` }, peer.url)),
      h("td", { class: "state" }, peer.state),
      h("td", {}, peer.zone),
      h("td", { class: "number" }, peer.weight),
      fill(peer),
      h("td", { class: "number chunks" }, peer.chunks),
      h("td", { class: "number share" }, share(peer)),
      h("td", { class: "now" }, activity(peer)),
    ),
  );
  return h(
    "table",
    { id: "peers" },
    h("thead", {}, h("tr", {}, ["peer", "url", "state", "zone", "weight", "fill", "chunks", "ring share", "now"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows),
  );
}

function upkeep(scrub) {
  const s = scrub.scrub;
  const r = scrub.repair;
  return h(
    "ul",
    { id: "upkeep" },
    h("li", {}, `scrub: ${s.passes} passes, ${s.chunks_checked} chunks (${bytes(s.bytes_checked)}) checked, ${s.errors_found} errors found; last pass ${date(s.last_scrub * 1000)}`),
    h("li", {}, `repair: ${r.queued} queued, ${r.chunks_repaired} chunks (${bytes(r.bytes_repaired)}) repaired, ${r.failures} failures`),
    h("li", {}, `garbage removed: ${s.garbage_removed} chunks (${bytes(s.garbage_bytes)})`),
  );
}

// The ring's evenness: each member's share of the circle over its weight's fair share
// (ring.balance; 1.0 is exactly fair), the spread of those ratios.
function evenness(ring) {
  const b = ring.balance;
  if (!b) return "no ring yet";
  return `ring share per weight ×${b.min_ratio.toFixed(2)}–×${b.max_ratio.toFixed(2)} of fair (cv ${b.cv.toFixed(3)})`;
}

export async function draw(main) {
  const ringBox = h("section", { id: "ring" }, h("h2", {}, "The ring"), h("p", { class: "muted" }, "Loading…"));
  const peersBox = h("section", {}, h("h2", {}, "Peers"));
  const upkeepBox = h("section", { id: "upkeep-box" }, h("h2", {}, "This peer's upkeep"));
  // One note while this peer does not answer, above the figures last shown (kept, said
  // to be of then), replaced at each failed refresh and gone at the next answer.
  const stale = h("div", { id: "stale" });
  show(main, stale, peersBox, ringBox);
  let digest = null;
  let answered = null;
  const refresh = async () => {
    try {
      const [cluster, scrub] = await Promise.all([call("GET", "/cluster"), call("GET", "/scrub")]);
      const ring = cluster.ring;
      const up = cluster.peers.filter((p) => p.state === "up").length;
      peersBox.replaceChildren(
        h("h2", {}, "Peers"),
        h("p", { id: "summary" }, `${cluster.peers.length} peers, ${up} up; ${evenness(ring)}; ${ring.members} members, ${ring.vnodes} virtual nodes per weight`),
        peersTable(cluster),
      );
      upkeepBox.replaceChildren(h("h2", {}, "This peer's upkeep"), upkeep(scrub));
      if (ring.digest !== digest) {
        digest = ring.digest;
        drawRing(ringBox, await call("GET", "/ui/ring"), cluster, upkeepBox);
      }
      answered = Date.now();
      stale.replaceChildren();
    } catch (error) {
      const since = answered ? `; the figures below are of ${date(answered)}` : "";
      stale.replaceChildren(failure(error), h("p", { class: "muted" }, `Retrying every ${REFRESH_MS / 1000} s${since}.`));
    }
    setTimeout(refresh, REFRESH_MS);
  };
  await refresh();
}
