"""The web dashboard on the operations port (``--health-addr``): ``/ui``, ``/status.json``, ``/cluster.json``.

Read-only. The page (``static/``: HTML, CSS and JS shipped in the package, no
CDN) polls ``/cluster.json`` on the node that served it. That node builds the
answer from its own gossip view (every member it has seen and the state gossip
gives it: alive, suspect, dead, left) and its shard map, plus each live peer's
``/status.json``, fetched over the peer's operations port, which gossip
publishes as the member's ``health`` address. The fetches are time-bounded; a
peer that does not answer in time is shown down. The browser talks to one node
only.

Modules: ``access`` (the auth-token gate and its cookie), ``status`` (one
node's figures), ``cluster`` (gathering the peers' figures), ``routes`` (which
path answers what).
"""
