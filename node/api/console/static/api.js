// The console's calls to the peer's JSON API: same origin, the session cookie, and the
// session's CSRF token (from the page's <meta>) on every request. A 401 means the session
// ended: back to the login form.

export const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Seconds a read may take before the page says the peer does not answer (a hung peer
// would otherwise leave the page as it was, saying nothing). Writes wait: cut off, one
// could not say whether it happened.
const READ_TIMEOUT_S = 10;

export async function call(method, path, body) {
  const headers = { "X-CSRF-Token": csrfToken, Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method === "GET") init.signal = AbortSignal.timeout(READ_TIMEOUT_S * 1000);
  try {
    return await answer(await fetch(path, init));
  } catch (error) {
    if (error.name !== "TimeoutError") throw error; // (the body's read times out too)
    throw new ApiError(0, "timeout", `this peer did not answer within ${READ_TIMEOUT_S} s`);
  }
}

// The JSON of an answer, or ApiError for an error answer (401: back to the login form).
async function answer(response) {
  if (response.status === 401) {
    window.location.assign("/ui/login");
    throw new ApiError(401, "unauthenticated", "the session ended: log in again");
  }
  if (!response.ok) {
    let code = "error";
    let message = `${response.status} ${response.statusText}`;
    try {
      const error = (await response.json()).error;
      code = error.code;
      message = error.message;
    } catch {
      // not a JSON error body: keep the status line
    }
    throw new ApiError(response.status, code, message);
  }
  if (response.status === 204) return null;
  return response.json();
}

// Throws for a name (or, with folder, a folder ending in "/") with an empty, "." or ".."
// segment: the store refuses those, but a browser removes dot segments from a URL (even
// escaped as %2e) before it is sent, so "a/../b" would reach b instead of being refused.
export function checkSegments(path, folder = false) {
  const segments = path.split("/");
  if (folder && segments.length > 1 && segments[segments.length - 1] === "") segments.pop();
  if (segments.some((segment) => segment === "" || segment === "." || segment === "..")) {
    throw new ApiError(400, "invalid_name", `empty, "." and ".." segments are not allowed: ${path}`);
  }
  return path;
}

// A file name as a path: each segment escaped, the slashes kept.
export function filePath(name) {
  return "/files/" + checkSegments(name).split("/").map(encodeURIComponent).join("/");
}
