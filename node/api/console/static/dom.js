// Building DOM nodes without innerHTML: every text is a text node, so no name or value
// from the store can become markup.

export function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";

export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export function bytes(count) {
  if (count === null || count === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

export function date(milliseconds) {
  if (!milliseconds) return "–";
  return new Date(milliseconds).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

export function shortId(id) {
  return id.slice(0, 8);
}

export function show(main, ...children) {
  main.replaceChildren(...children.filter((child) => child !== null && child !== undefined && child !== false));
}

// Bidirectional controls (U+202A-202E embeddings and overrides, U+2066-2069 isolates) shown
// as their code points, so "invoice<U+202E>gpj.exe" cannot pass for "invoiceexe.jpg".
const BIDI = /[\u202a-\u202e\u2066-\u2069]/g;

export function shownName(name) {
  return name.replace(BIDI, (char) => `<U+${char.codePointAt(0).toString(16).toUpperCase()}>`);
}

// What a download saves the file as: its last segment, cut to 200 UTF-8 bytes (browsers
// save nothing for a name past the file system's 255), its extension kept.
export function downloadName(name) {
  const last = name.split("/").pop();
  const encoder = new TextEncoder();
  if (encoder.encode(last).length <= 200) return last;
  const dot = last.lastIndexOf(".");
  const extension = dot > 0 && last.length - dot <= 16 ? last.slice(dot) : "";
  let stem = [...last.slice(0, last.length - extension.length)];
  while (encoder.encode(stem.join("") + extension).length > 200) stem = stem.slice(0, -1);
  return stem.join("") + extension;
}

export function failure(error) {
  return h("p", { class: "error", role: "alert" }, error.message ?? String(error));
}
