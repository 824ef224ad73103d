"""The HTTP frontends: the public files API and the peer-to-peer API, and the error mapping.

Routes parse and validate requests, call the room below, and shape answers; one middleware
(``errors``) turns domain exceptions into statuses and JSON bodies. Later frontends (S3, the
web console) live here beside them.

May import every room below it. Nothing but ``node.process`` imports the frontends.
"""
