// Keys and namespaces (admin keys): create a key with its grants (read, write, create
// namespaces, admin; its secret is shown once), revoke one; create, list, remove namespaces.

import { call, checkSegments } from "./api.js";
import { date, failure, h, show } from "./dom.js";

function list(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

function grants(g) {
  const parts = [];
  if (g.admin) parts.push("admin");
  if (g.read.length) parts.push(`read: ${g.read.join(", ")}`);
  if (g.write.length) parts.push(`write: ${g.write.join(", ")}`);
  if (g.create) parts.push("create namespaces");
  return parts.join("; ") || "none";
}

// The grants cell of a key turned into a form that replaces them (PUT /keys/ID/grants).
function editGrants(key, cell, refresh) {
  const read = h("input", { class: "grant-read", value: key.grants.read.join(", "), size: 16 });
  const write = h("input", { class: "grant-write", value: key.grants.write.join(", "), size: 16 });
  const create = h("input", { type: "checkbox", class: "grant-create", checked: key.grants.create });
  const admin = h("input", { type: "checkbox", class: "grant-admin", checked: key.grants.admin });
  const note = h("span");
  const form = h(
    "form",
    { class: "grants-form" },
    h("label", {}, "read ", read),
    h("label", {}, "write ", write),
    h("label", {}, create, " create namespaces"),
    h("label", {}, admin, " admin"),
    h("button", { type: "submit" }, "Save grants"),
    note,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await call("PUT", `/keys/${encodeURIComponent(key.access_key)}/grants`, {
        read: list(read.value),
        write: list(write.value),
        create: create.checked,
        admin: admin.checked,
      });
      refresh();
    } catch (error) {
      note.replaceChildren(failure(error));
    }
  });
  cell.replaceChildren(form);
}

async function keysSection(refresh) {
  const { keys } = await call("GET", "/keys");
  const rows = keys.map((key) => {
    const cell = h("td", { class: "grants" }, grants(key.grants));
    return h(
      "tr",
      { "data-key": key.access_key },
      h("td", {}, h("code", {}, key.access_key)),
      h("td", {}, key.name),
      cell,
      h("td", {}, date(key.created_ms)),
      h(
        "td",
        {},
        h("button", { type: "button", class: "edit-grants", onclick: () => editGrants(key, cell, refresh) }, "grants"),
        " ",
        h("button", {
          type: "button",
          class: "revoke",
          onclick: async (event) => {
            if (!window.confirm(`Revoke ${key.access_key} (${key.name})? Its holders lose access at once.`)) return;
            try {
              await call("DELETE", `/keys/${encodeURIComponent(key.access_key)}`);
              refresh();
            } catch (error) {
              event.target.after(failure(error));
            }
          },
        }, "revoke"),
      ),
    );
  });
  const field = (id, label, attributes = {}) => h("label", {}, label, " ", h("input", { id, ...attributes }));
  const secret = h("div", { id: "new-secret" });
  const form = h(
    "form",
    { id: "key-form" },
    field("key-name", "Name", { required: true, maxlength: 128 }),
    field("key-read", "Read namespaces", { placeholder: "ns1, ns2 (* for all)" }),
    field("key-write", "Write namespaces", { placeholder: "ns1, ns2 (* for all)" }),
    field("key-create", "May create namespaces", { type: "checkbox" }),
    field("key-admin", "Admin", { type: "checkbox" }),
    h("button", { type: "submit" }, "Create key"),
    secret,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const made = await call("POST", "/keys", {
        name: form.querySelector("#key-name").value,
        read: list(form.querySelector("#key-read").value),
        write: list(form.querySelector("#key-write").value),
        create: form.querySelector("#key-create").checked,
        admin: form.querySelector("#key-admin").checked,
      });
      await refresh();
      document.getElementById("new-secret").replaceChildren(h("p", { class: "secret" }, "New key ", h("code", {}, made.access_key), " with secret ", h("code", { id: "secret-value" }, made.secret_key), ": copy it now, it is not shown again."));
    } catch (error) {
      secret.replaceChildren(failure(error));
    }
  });
  return h("section", {}, h("h2", {}, "Access keys"), h("table", { id: "keys" }, h("thead", {}, h("tr", {}, ["access key", "name", "grants", "created", ""].map((t) => h("th", {}, t)))), h("tbody", {}, rows)), h("h3", {}, "New key"), form);
}

async function namespacesSection(refresh) {
  const { namespaces } = await call("GET", "/namespaces");
  const rows = namespaces.map((ns) =>
    h(
      "tr",
      {},
      h("td", {}, ns.name),
      h("td", {}, ns.public_read ? "public read" : "keys only"),
      h("td", {}, date(ns.created_ms)),
      h("td", {}, h("button", {
        type: "button",
        class: "remove-namespace",
        onclick: async () => {
          if (!window.confirm(`Remove the namespace ${ns.name}? It must be empty.`)) return;
          try {
            await call("DELETE", `/namespaces/${encodeURIComponent(ns.name)}`);
            refresh();
          } catch (error) {
            window.alert(error.message);
          }
        },
      }, "remove")),
    ),
  );
  const name = h("input", { id: "ns-name", required: true, placeholder: "3-63 of a-z 0-9 . -" });
  const open = h("input", { id: "ns-public", type: "checkbox" });
  const note = h("div");
  const form = h("form", { id: "namespace-form" }, h("label", {}, "Name ", name), h("label", {}, "Public read ", open), h("button", { type: "submit" }, "Create namespace"), note);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const wanted = checkSegments(name.value.trim());
      await call("PUT", `/namespaces/${encodeURIComponent(wanted)}`, { public_read: open.checked });
      refresh();
    } catch (error) {
      note.replaceChildren(failure(error));
    }
  });
  return h("section", {}, h("h2", {}, "Namespaces"), h("table", { id: "namespaces" }, h("thead", {}, h("tr", {}, ["namespace", "reading", "created", ""].map((t) => h("th", {}, t)))), h("tbody", {}, rows)), form);
}

export async function draw(main) {
  const refresh = async () => {
    try {
      show(main, h("h1", {}, "Keys and namespaces"), await keysSection(refresh), await namespacesSection(refresh));
    } catch (error) {
      show(main, h("h1", {}, "Keys and namespaces"), failure(error));
    }
  };
  await refresh();
}
