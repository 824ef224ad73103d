// The ring as a circle: each member's arcs (the slices it is primary for) in its colour,
// and inside them the arcs a newcomer of median weight would take if it joined, drawn
// from the peer's /ui/ring data (computed there with the pure ring).

import { h, shortId, svg } from "./dom.js";

const SIZE = 320;
const CENTER = SIZE / 2;
const OUTER = 156;
const INNER = 124;
const NEW_OUTER = 118;
const NEW_INNER = 96;

export function colour(index, count) {
  return `hsl(${Math.round((360 * index) / Math.max(count, 1))} 65% 50%)`;
}

function point(radius, fraction) {
  const angle = 2 * Math.PI * fraction - Math.PI / 2; // 0 at the top, clockwise
  return [CENTER + radius * Math.cos(angle), CENTER + radius * Math.sin(angle)];
}

function band(start, end, outer, inner) {
  const [x1, y1] = point(outer, start);
  const [x2, y2] = point(outer, end);
  const [x3, y3] = point(inner, end);
  const [x4, y4] = point(inner, start);
  const large = end - start > 0.5 ? 1 : 0;
  if (end - start >= 1) {
    return `M ${CENTER - outer} ${CENTER} a ${outer} ${outer} 0 1 0 ${2 * outer} 0 a ${outer} ${outer} 0 1 0 ${-2 * outer} 0 M ${CENTER - inner} ${CENTER} a ${inner} ${inner} 0 1 1 ${2 * inner} 0 a ${inner} ${inner} 0 1 1 ${-2 * inner} 0`;
  }
  return `M ${x1} ${y1} A ${outer} ${outer} 0 ${large} 1 ${x2} ${y2} L ${x3} ${y3} A ${inner} ${inner} 0 ${large} 0 ${x4} ${y4} Z`;
}

export function drawRing(box, ring, cluster, beside) {
  const count = ring.members.length;
  const picture = svg("svg", { viewBox: `0 0 ${SIZE} ${SIZE}`, width: SIZE, height: SIZE, role: "img", id: "ring-drawing" });
  picture.append(svg("title", {}, "The ring: members' arcs, and a newcomer's"));
  for (const [start, end, index] of ring.sectors) {
    const member = ring.members[index];
    const arc = svg("path", { d: band(start / ring.bins, end / ring.bins, OUTER, INNER), fill: colour(index, count), class: "arc", "data-member": member.id });
    arc.append(svg("title", {}, `${shortId(member.id)} (${member.url})`));
    picture.append(arc);
  }
  if (ring.newcomer) {
    ring.newcomer.shares.forEach((share, bin) => {
      if (share <= 0) return;
      const path = svg("path", { d: band(bin / ring.bins, (bin + 1) / ring.bins, NEW_OUTER, NEW_INNER), class: "newcomer-arc" });
      path.style.opacity = Math.min(1, 0.25 + share * 3).toFixed(2);
      picture.append(path);
    });
  }
  const states = new Map(cluster.peers.map((p) => [p.id, p.state]));
  const legend = h(
    "table",
    { class: "legend" },
    h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "member"), h("th", {}, "weight"), h("th", {}, `share of placement sets (n=${ring.n})`), h("th", {}, "after a newcomer"))),
    h(
      "tbody",
      {},
      ring.members.map((member, index) => {
        const swatch = h("span", { class: "swatch" });
        swatch.style.background = colour(index, count);
        return h(
          "tr",
          {},
          h("td", {}, swatch),
          h("td", {}, h("code", { title: member.id }, shortId(member.id)), ` ${member.url} (${states.get(member.id) ?? "?"})`),
          h("td", { class: "number" }, member.weight),
          h("td", { class: "number" }, `${(member.share * 100).toFixed(1)}%`),
          h("td", { class: "number" }, `${(member.share_after * 100).toFixed(1)}%`),
        );
      }),
    ),
  );
  const newcomer = ring.newcomer
    ? h("p", { id: "newcomer" }, h("span", { class: "swatch newcomer" }), ` Inner ring: where a newcomer of weight ${ring.newcomer.weight} would take load when it joins (the arcs where it would become first on the ring; darker is more): small arcs spread round the whole circle, taken from every member. It would be in ${(ring.newcomer.share * 100).toFixed(1)}% of placement sets.`)
    : null;
  box.replaceChildren(h("h2", {}, "The ring"), h("div", { class: "ring-row" }, picture, h("div", {}, legend, newcomer, beside)));
}
