// The console's entry: draws the page the server named in <body data-page>.

import { failure } from "./dom.js";

const pages = {
  cluster: () => import("./cluster.js"),
  files: () => import("./files.js"),
  file: () => import("./file.js"),
  upload: () => import("./upload.js"),
  keys: () => import("./keys.js"),
};

const main = document.getElementById("main");
const load = pages[document.body.dataset.page];
if (load) {
  load()
    .then((page) => page.draw(main))
    .catch((error) => main.replaceChildren(failure(error)));
}
