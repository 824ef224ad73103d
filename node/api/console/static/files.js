// The files page: namespaces, then folders of one (delimiter listings), with sizes, dates,
// download, details and delete (after a confirmation).

import { call, filePath } from "./api.js";
import { bytes, downloadName, failure, h, show, shownName } from "./dom.js";

const PAGE = 200;

// The prefix listed: a bare namespace ("alpha") is its folder ("alpha/"), not a prefix
// that would list that folder as a row named "/".
function here() {
  const prefix = new URLSearchParams(window.location.search).get("prefix") ?? "";
  return prefix && !prefix.includes("/") ? prefix + "/" : prefix;
}

function crumbs(prefix) {
  const parts = prefix.split("/").filter(Boolean);
  const links = [h("a", { href: "/ui/files" }, "namespaces")];
  let path = "";
  for (const part of parts) {
    path += part + "/";
    links.push(" / ", h("a", { href: `/ui/files?prefix=${encodeURIComponent(path)}` }, shownName(part)));
  }
  return h("p", { class: "crumbs", id: "crumbs" }, links);
}

async function namespaces(main) {
  const { namespaces: found } = await call("GET", "/namespaces");
  const rows = found.map((ns) =>
    h(
      "tr",
      {},
      h("td", {}, h("a", { href: `/ui/files?prefix=${encodeURIComponent(ns.name + "/")}`, class: "folder" }, ns.name + "/")),
      h("td", {}, ns.public_read ? "public read" : ""),
    ),
  );
  show(
    main,
    h("h1", {}, "Files"),
    crumbs(""),
    found.length
      ? h("table", { id: "listing" }, h("thead", {}, h("tr", {}, h("th", {}, "namespace"), h("th", {}, ""))), h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No namespace to show: none exists yet, or this key may read none."),
  );
}

async function remove(name, row) {
  if (!window.confirm(`Delete ${shownName(name)}? This cannot be undone.`)) return;
  try {
    await call("DELETE", filePath(name));
    row.remove();
  } catch (error) {
    row.after(h("tr", {}, h("td", { colspan: 5 }, failure(error))));
  }
}

function fileRow(file, prefix) {
  const row = h(
    "tr",
    { class: "file", "data-name": file.name },
    h("td", {}, h("a", { href: `/ui/file?name=${encodeURIComponent(file.name)}`, class: "details" }, shownName(file.name.slice(prefix.length)))),
    h("td", { class: "number size" }, bytes(file.size)),
    h("td", {}, file.modified.replace("T", " ").replace("Z", " UTC")),
    h("td", {}, h("a", { href: filePath(file.name), download: downloadName(file.name), class: "download" }, "download")),
  );
  row.append(h("td", {}, h("button", { type: "button", class: "delete", onclick: () => remove(file.name, row) }, "delete")));
  return row;
}

async function folder(main, prefix, after) {
  const query = new URLSearchParams({ prefix, delimiter: "/", limit: String(PAGE) });
  if (after) query.set("start_after", after);
  const page = await call("GET", `/files?${query}`);
  const rows = [
    ...page.prefixes.map((sub) =>
      h("tr", { class: "folder" }, h("td", { colspan: 5 }, h("a", { href: `/ui/files?prefix=${encodeURIComponent(sub)}`, class: "folder" }, shownName(sub.slice(prefix.length))))),
    ),
    ...page.files.map((file) => fileRow(file, prefix)),
  ];
  const more = page.next
    ? h("button", { type: "button", id: "more", onclick: () => folder(main, prefix, page.next).catch((e) => main.append(failure(e))) }, "next page")
    : null;
  show(
    main,
    h("h1", {}, "Files"),
    crumbs(prefix),
    h("p", {}, h("a", { href: `/ui/upload?prefix=${encodeURIComponent(prefix)}` }, `Upload to ${shownName(prefix)}`)),
    rows.length
      ? h("table", { id: "listing" }, h("thead", {}, h("tr", {}, ["name", "size", "modified", "", ""].map((t) => h("th", {}, t)))), h("tbody", {}, rows))
      : h("p", { class: "muted" }, "Nothing here."),
    more,
  );
}

export async function draw(main) {
  const prefix = here();
  try {
    if (!prefix) await namespaces(main);
    else await folder(main, prefix, "");
  } catch (error) {
    show(main, h("h1", {}, "Files"), crumbs(prefix), failure(error));
  }
}
