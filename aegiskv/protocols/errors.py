"""The error every sans-IO codec raises when its peer breaks the protocol."""


class PeerProtocolError(Exception):
    """The peer sent bytes that break the protocol; the server answers and closes.

    Distinct from a bug in our own use of a codec (which raises ValueError or
    similar): this is always the peer's fault, and never fatal to the server.
    """
