// The upload page: a file dropped on the zone or picked, sent as multipart/form-data to
// POST /files/{namespace}/[folder/] (the peer parses the form as it streams and never
// holds the file whole), with a progress bar. The form's fields come before the file, as
// the peer asks: the name (empty: the peer makes a UUID) and the session's CSRF token.

import { checkSegments, csrfToken } from "./api.js";
import { bytes, h, show, shownName } from "./dom.js";

function send(folder, name, file, progress, status) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("name", name);
    form.append("csrf_token", csrfToken);
    form.append("file", file, file.name);
    const request = new XMLHttpRequest();
    request.open("POST", "/files/" + folder.split("/").map(encodeURIComponent).join("/"));
    request.setRequestHeader("X-CSRF-Token", csrfToken);
    request.responseType = "json";
    request.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      progress.max = event.total;
      progress.value = event.loaded;
      status.textContent = `${bytes(event.loaded)} of ${bytes(event.total)} sent`;
    });
    request.addEventListener("load", () => {
      if (request.status === 201) resolve(request.response);
      else reject(new Error(request.response?.error?.message ?? `${request.status} ${request.statusText}`));
    });
    request.addEventListener("error", () => reject(new Error("the upload failed: the connection broke")));
    request.send(form);
  });
}

export async function draw(main) {
  const prefix = new URLSearchParams(window.location.search).get("prefix") ?? "";
  const folder = h("input", { id: "folder", name: "folder", value: prefix, placeholder: "namespace/folder/", required: true, size: 40 });
  const name = h("input", { id: "name", name: "name", placeholder: "(empty: the file's name; clear it for a UUID)", size: 40 });
  const input = h("input", { type: "file", id: "file-input", name: "file" });
  const progress = h("progress", { id: "progress", value: 0, max: 1 });
  const status = h("p", { id: "upload-status", role: "status" });
  const result = h("div", { id: "upload-result" });
  const button = h("button", { type: "submit", id: "upload" }, "Upload");
  const zone = h("div", { id: "drop-zone", class: "drop-zone" }, "Drop a file here, or pick one: ", input);
  let chosen = null;
  let typed = false; // a name the user typed stays; else the name follows the file chosen
  name.addEventListener("input", () => {
    typed = name.value !== "";
  });
  const choose = (file) => {
    chosen = file;
    if (file && !typed) name.value = file.name;
    status.textContent = file ? `${shownName(file.name)}, ${bytes(file.size)}` : "";
  };
  input.addEventListener("change", () => choose(input.files[0] ?? null));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    choose(event.dataTransfer.files[0] ?? null);
  });
  const form = h("form", { id: "upload-form" }, h("label", {}, "Folder ", folder), h("label", {}, "Name ", name), zone, button, progress, status, result);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let target = folder.value.replace(/^\/+/, "");
    if (!target || !chosen) {
      status.textContent = "Choose a folder (at least a namespace) and a file.";
      return;
    }
    if (!target.endsWith("/")) target += "/";
    result.replaceChildren();
    try {
      checkSegments(target, true);
      if (name.value) checkSegments(name.value);
    } catch (error) {
      result.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
      return;
    }
    button.disabled = true;
    progress.value = 0;
    try {
      const stored = await send(target, name.value, chosen, progress, status);
      progress.value = progress.max;
      status.textContent = `Stored ${shownName(stored.name)} (${bytes(stored.size)}).`;
      result.replaceChildren(h("a", { href: `/ui/file?name=${encodeURIComponent(stored.name)}`, id: "stored" }, shownName(stored.name)), " · ", h("a", { href: `/ui/files?prefix=${encodeURIComponent(target)}` }, `the folder ${shownName(target)}`));
    } catch (error) {
      status.textContent = "";
      result.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
    } finally {
      button.disabled = false;
    }
  });
  show(main, h("h1", {}, "Upload"), form);
}
