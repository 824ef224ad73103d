"""The web console at ``/ui/``: pages for the cluster, files, uploads and keys, served by
every peer behind the same access keys.

- ``routes``: the login form, sessions (``node.access.sessions``, cookies set here), the
  page shells, static files and the ring drawing's data (``ring.drawing``);
- ``static/``: the pages' plain ES modules and style sheet (no build step, no library);
  they call the public JSON API with the session cookie and the CSRF token
  (``node.api.browser``).

Imports the native API's modules beside it; ``node.process.wiring`` adds its routes.
docs/console.md says what it shows and how its sessions work.
"""
