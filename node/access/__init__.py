"""Who may do what on the public API: access keys, grants and namespaces (cluster state)."""
