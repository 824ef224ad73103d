// One file's details: its size, version, type and digest, and its chunk map: which peer
// holds which chunk, data or parity, and whether it is there (holder up) or missing.

import { call, filePath } from "./api.js";
import { bytes, downloadName, failure, h, show, shortId, shownName } from "./dom.js";

function chunkMap(manifest, peers) {
  const byIndex = new Map(manifest.chunks.map((chunk) => [chunk.index, chunk]));
  const rows = [];
  for (let index = 0; index < manifest.k + manifest.m; index += 1) {
    const chunk = byIndex.get(index);
    const kind = index < manifest.k ? "data" : "parity";
    if (!chunk) {
      rows.push(h("tr", { class: "chunk missing" }, h("td", {}, index), h("td", {}, kind), h("td", {}, "–"), h("td", { class: "health" }, "missing (not placed yet: repair places it)"), h("td", {}, "")));
      continue;
    }
    const peer = peers.get(chunk.holder);
    const state = peer ? peer.state : "unknown";
    const health = state === "up" ? "healthy" : `missing (holder ${state})`;
    rows.push(
      h(
        "tr",
        { class: `chunk ${state === "up" ? "healthy" : "missing"}` },
        h("td", {}, index),
        h("td", {}, kind),
        h("td", {}, h("code", { title: chunk.holder }, shortId(chunk.holder)), peer ? ` ${peer.url}` : ""),
        h("td", { class: "health" }, health),
        h("td", { class: "number" }, bytes(chunk.size)),
      ),
    );
  }
  return h("table", { id: "chunk-map" }, h("thead", {}, h("tr", {}, ["chunk", "kind", "holder", "health", "size"].map((t) => h("th", {}, t)))), h("tbody", {}, rows));
}

export async function draw(main) {
  const name = new URLSearchParams(window.location.search).get("name") ?? "";
  const folder = name.slice(0, name.lastIndexOf("/") + 1);
  const back = h("p", {}, h("a", { href: `/ui/files?prefix=${encodeURIComponent(folder)}` }, `back to ${shownName(folder)}`));
  try {
    const [manifest, cluster] = await Promise.all([call("GET", `/manifests/${filePath(name).slice("/files/".length)}`), call("GET", "/cluster")]);
    const peers = new Map(cluster.peers.map((p) => [p.id, p]));
    const facts = [
      ["size", `${bytes(manifest.size)} (${manifest.size} bytes)`],
      ["modified", manifest.modified],
      ["version", manifest.version],
      ["content type", manifest.content_type],
      ["ETag", manifest.etag],
      ["layout", `${manifest.k} data + ${manifest.m} parity chunks of ${bytes(manifest.chunk_size)}, ${manifest.stripes} stripes of ${bytes(manifest.block_size)} blocks`],
      ["state", manifest.degraded ? "degraded (repair is placing missing chunks)" : "complete"],
    ];
    const remove = async () => {
      if (!window.confirm(`Delete ${shownName(name)}? This cannot be undone.`)) return;
      try {
        await call("DELETE", filePath(name));
        window.location.assign(`/ui/files?prefix=${encodeURIComponent(folder)}`);
      } catch (error) {
        main.append(failure(error));
      }
    };
    show(
      main,
      h("h1", { id: "file-name" }, shownName(name)),
      back,
      h("dl", { id: "facts" }, facts.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
      h("p", {}, h("a", { href: filePath(name), download: downloadName(name), id: "download", class: "button" }, "Download"), " ", h("button", { type: "button", id: "delete", onclick: remove }, "Delete")),
      h("h2", {}, "Chunk map"),
      manifest.inline ? h("p", { id: "inline" }, "Stored inline: a small file's bytes are in its manifest, on its 3 manifest replicas; it has no chunks.") : chunkMap(manifest, peers),
    );
  } catch (error) {
    show(main, h("h1", {}, shownName(name)), back, failure(error));
  }
}
