"""TLS contexts for the server's ports and for the client.

Server side: TLS 1.2 at least, OpenSSL's default cipher list minus anything
without forward secrecy or authentication, no compression, no renegotiation.
With a CA file the server requires and verifies a client certificate (mutual
TLS). Problems with the files are one line for the operator
(:class:`TlsConfigError`), raised before any port is bound.
"""

from __future__ import annotations

import os
import ssl

# ECDHE key exchange with AEAD ciphers for TLS 1.2 (TLS 1.3 suites are fixed by
# OpenSSL and all qualify); no RSA key exchange, no CBC, no anonymous suites.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"


class TlsConfigError(Exception):
    """A certificate, key or CA file cannot be used; the message names it."""


def server_context(cert_file: str, key_file: str, ca_file: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    for label, path in (("certificate", cert_file), ("key", key_file)):
        if not os.path.isfile(path):
            raise TlsConfigError(f"TLS {label} {path}: no such file")
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as error:
        raise TlsConfigError(
            f"TLS certificate {cert_file} / key {key_file}: cannot load ({error.reason or error}): "
            "expected a PEM certificate and its matching PEM private key"
        ) from None
    except OSError as error:
        raise TlsConfigError(f"TLS certificate or key: cannot read: {error.strerror or error}") from None
    if ca_file:
        if not os.path.isfile(ca_file):
            raise TlsConfigError(f"TLS CA {ca_file}: no such file")
        try:
            context.load_verify_locations(cafile=ca_file)
        except FileNotFoundError:
            raise TlsConfigError(f"TLS CA {ca_file}: no such file") from None
        except ssl.SSLError as error:
            raise TlsConfigError(
                f"TLS CA {ca_file}: cannot load ({error.reason or error}): expected PEM CA certificates"
            ) from None
        except OSError as error:
            raise TlsConfigError(f"TLS CA {ca_file}: cannot read: {error.strerror or error}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client context trusting ``ca_file`` (or the system store) and presenting ``cert_file`` if given."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context
