// The files page: namespaces, then folders of one (delimiter listings), with sizes, dates,
// download, details and delete (after a confirmation).

import { call, filePath } from "./api.js";
import { bytes, failure, h, show } from "./dom.js";

const PAGE = 200;

function here() {
  return new URLSearchParams(window.location.search).get("prefix") ?? "";
}

function crumbs(prefix) {
  const parts = prefix.split("/").filter(Boolean);
  const links = [h("a", { href: "/ui/files" }, "namespaces")];
  let path = "";
  for (const part of parts) {
    path += part + "/";
    links.push(" / ", h("a", { href: `/ui/files?prefix=${encodeURIComponent(path)}` }, part));
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
      : h("p", { class: "muted" }, "No namespace yet: upload a file or create one on the Keys page."),
  );
}

async function remove(name, row) {
  if (!window.confirm(`Delete ${name}? This cannot be undone.`)) return;
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
    h("td", {}, h("a", { href: `/ui/file?name=${encodeURIComponent(file.name)}`, class: "details" }, file.name.slice(prefix.length))),
    h("td", { class: "number size" }, bytes(file.size)),
    h("td", {}, file.modified.replace("T", " ").replace("Z", " UTC")),
    h("td", {}, h("a", { href: filePath(file.name), download: file.name.split("/").pop(), class: "download" }, "download")),
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
      h("tr", { class: "folder" }, h("td", { colspan: 5 }, h("a", { href: `/ui/files?prefix=${encodeURIComponent(sub)}`, class: "folder" }, sub.slice(prefix.length)))),
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
    h("p", {}, h("a", { href: `/ui/upload?prefix=${encodeURIComponent(prefix)}` }, `Upload to ${prefix}`)),
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
