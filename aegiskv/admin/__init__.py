"""The operator's command line: ``aegis cluster up/down``, ``aegis status`` and the other admin commands.

``aegiskv.admin.main`` is the ``aegis`` entry point: it runs these subcommands, and hands
every other command line to :mod:`aegiskv.server.cli`, which runs a node. The admin
commands talk to nodes through the client (the native protocol), so they work from a
client-only install too; ``rich`` draws their tables when it is installed and stdout is a
terminal, and is imported only then.
"""
