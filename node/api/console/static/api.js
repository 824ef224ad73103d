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

export async function call(method, path, body) {
  const headers = { "X-CSRF-Token": csrfToken, Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
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

// A file name as a path: each segment escaped, the slashes kept.
export function filePath(name) {
  return "/files/" + name.split("/").map(encodeURIComponent).join("/");
}
