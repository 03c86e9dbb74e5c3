"""Kafka security from :class:`~stream_app.settings.Settings`: SASL (PLAIN, SCRAM) and TLS.

One resolution step, two outputs, so the Faust app and the kafka-python clients (replay,
admin, test readers) always connect the same way:

    Settings ──resolve_security()──► KafkaSecurity ──► faust_broker_credentials()  (Faust app)
                                                   └─► kafka_python_kwargs()       (kafka-python)

``security_protocol``   what is needed                         Faust ``broker_credentials``
``PLAINTEXT``           nothing (no SASL/TLS setting may be set)  ``None``
``SSL``                 optional CA / client certificate       ``faust.SSLCredentials(ctx)``
``SASL_PLAINTEXT``      username + password (mechanism: PLAIN  ``faust.SASLCredentials(...)``
                        unless SCRAM-SHA-256/512 is named)
``SASL_SSL``            both of the above                      ``faust.SASLCredentials(..., ssl_context=ctx)``

Both clients get the same :class:`ssl.SSLContext` (server certificate and host name always
verified, against ``ssl_cafile`` or the system CAs) — kafka-python's own default context would
only verify the server *optionally* when no CA file is given.

Secrets come only from the environment (``SEQSTREAM_SASL_PASSWORD``) or a file
(``SEQSTREAM_SASL_PASSWORD_FILE``, e.g. a mounted Kubernetes Secret; one trailing newline is
dropped). They are never logged: :class:`KafkaSecurity` keeps the password as a
:class:`~pydantic.SecretStr`, the kafka-python keyword dict masks it in ``repr``, and Faust's
``SASLCredentials`` shows only the user name. Inconsistent settings (SASL fields with a
non-SASL protocol, TLS files without TLS, a missing file) raise :class:`SecurityConfigError`
before any connection is tried.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from schemas.exceptions import SeqstreamError

if TYPE_CHECKING:  # pragma: no cover
    from faust.types.auth import CredentialsT

    from stream_app.settings import Settings

__all__ = [
    "KafkaSecurity",
    "MaskedKwargs",
    "SecurityConfigError",
    "build_ssl_context",
    "faust_broker_credentials",
    "kafka_python_kwargs",
    "resolve_security",
]

SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
DEFAULT_SASL_MECHANISM = "PLAIN"
_MASK = "**********"
#: Keys of client keyword arguments whose values are secrets.
SECRET_KEYS = frozenset({"sasl_plain_password", "ssl_password"})


class SecurityConfigError(SeqstreamError, ValueError):
    """The Kafka security settings are inconsistent or a credential file cannot be read."""


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """Validated security settings; ``password`` never shows in ``repr``."""

    protocol: str
    mechanism: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in SASL_PROTOCOLS

    @property
    def uses_tls(self) -> bool:
        return self.protocol in TLS_PROTOCOLS


class MaskedKwargs(dict):
    """A plain ``dict`` of client keyword arguments whose ``repr``/``str`` hide secrets.

    ``KafkaProducer(**kw)`` sees the real values; ``log.info("%s", kw)`` shows ``**********``.
    """

    def __repr__(self) -> str:
        shown = {k: (_MASK if k in SECRET_KEYS and v is not None else v) for k, v in self.items()}
        return f"{type(self).__name__}({shown!r})"

    __str__ = __repr__


# --------------------------------------------------------------------------- resolution
def resolve_security(settings: Settings) -> KafkaSecurity:
    """Check the security settings for consistency and read the password (env or file)."""
    protocol = settings.security_protocol
    password = _read_password(settings)
    sasl_given = [
        name
        for name, value in (
            ("sasl_mechanism", settings.sasl_mechanism),
            ("sasl_username", settings.sasl_username),
            ("sasl_password", settings.sasl_password),
            ("sasl_password_file", settings.sasl_password_file),
        )
        if value is not None
    ]
    tls_given = [
        name
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
        if getattr(settings, name) is not None
    ]

    if protocol not in SASL_PROTOCOLS and sasl_given:
        raise SecurityConfigError(
            f"{_env_names(sasl_given)} set but SEQSTREAM_SECURITY_PROTOCOL={protocol}: the "
            "credentials would be ignored; use SASL_PLAINTEXT or SASL_SSL, or unset them"
        )
    if protocol not in TLS_PROTOCOLS and tls_given:
        raise SecurityConfigError(
            f"{_env_names(tls_given)} set but SEQSTREAM_SECURITY_PROTOCOL={protocol}: TLS is "
            "off; use SSL or SASL_SSL, or unset them"
        )

    mechanism = username = None
    if protocol in SASL_PROTOCOLS:
        mechanism = settings.sasl_mechanism or DEFAULT_SASL_MECHANISM
        username = settings.sasl_username
        if not username:
            raise SecurityConfigError(
                f"SEQSTREAM_SECURITY_PROTOCOL={protocol} needs SEQSTREAM_SASL_USERNAME"
            )
        if password is None:
            raise SecurityConfigError(
                f"SEQSTREAM_SECURITY_PROTOCOL={protocol} needs a password: set "
                "SEQSTREAM_SASL_PASSWORD or SEQSTREAM_SASL_PASSWORD_FILE"
            )

    if settings.ssl_keyfile and not settings.ssl_certfile:
        raise SecurityConfigError(
            "SEQSTREAM_SSL_KEYFILE is set without SEQSTREAM_SSL_CERTFILE (the client certificate)"
        )
    for name in tls_given:
        path = getattr(settings, name)
        if not os.path.isfile(path):
            raise SecurityConfigError(f"SEQSTREAM_{name.upper()}: no such file: {path}")

    return KafkaSecurity(
        protocol=protocol,
        mechanism=mechanism,
        username=username,
        password=password,
        cafile=settings.ssl_cafile,
        certfile=settings.ssl_certfile,
        keyfile=settings.ssl_keyfile,
    )


def _read_password(settings: Settings) -> SecretStr | None:
    if settings.sasl_password is not None and settings.sasl_password_file is not None:
        raise SecurityConfigError(
            "both SEQSTREAM_SASL_PASSWORD and SEQSTREAM_SASL_PASSWORD_FILE are set; keep one"
        )
    if settings.sasl_password_file is None:
        pw = settings.sasl_password
        if pw is not None and not pw.get_secret_value():
            raise SecurityConfigError("SEQSTREAM_SASL_PASSWORD is empty")
        return pw
    path = settings.sasl_password_file
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        # e.strerror only: the message names the file, never its content
        raise SecurityConfigError(
            f"SEQSTREAM_SASL_PASSWORD_FILE: cannot read {path}: {e.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise SecurityConfigError(
            f"SEQSTREAM_SASL_PASSWORD_FILE: {path} is not UTF-8 text"
        ) from None
    # `echo pw > file` and `kubectl create secret --from-file` leave one trailing newline
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise SecurityConfigError(f"SEQSTREAM_SASL_PASSWORD_FILE: {path} is empty")
    return SecretStr(text)


def _env_names(fields: list[str]) -> str:
    return ", ".join(f"SEQSTREAM_{f.upper()}" for f in fields)


# --------------------------------------------------------------------------- TLS
def build_ssl_context(sec: KafkaSecurity) -> ssl.SSLContext | None:
    """The client TLS context (``None`` without TLS): server certificate and host name are
    verified against ``cafile`` (or the system CAs); ``certfile``/``keyfile`` give a client
    certificate for mutual TLS."""
    if not sec.uses_tls:
        return None
    try:
        ctx = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=sec.cafile)
    except (ssl.SSLError, OSError) as e:
        raise SecurityConfigError(
            f"SEQSTREAM_SSL_CAFILE: cannot load CA certificates from {sec.cafile}: {e}"
        ) from None
    if sec.certfile:
        try:
            ctx.load_cert_chain(certfile=sec.certfile, keyfile=sec.keyfile)
        except (ssl.SSLError, OSError) as e:
            raise SecurityConfigError(
                f"SEQSTREAM_SSL_CERTFILE/SSL_KEYFILE: cannot load the client certificate "
                f"{sec.certfile} (key {sec.keyfile or 'in the same file'}): {e}"
            ) from None
    return ctx


# --------------------------------------------------------------------------- outputs
def faust_broker_credentials(settings: Settings) -> CredentialsT | None:
    """``broker_credentials`` for ``faust.App`` (``None`` for PLAINTEXT)."""
    import faust

    sec = resolve_security(settings)
    ctx = build_ssl_context(sec)
    if sec.uses_sasl:
        assert sec.password is not None  # resolve_security guarantees it
        return faust.SASLCredentials(
            username=sec.username,
            password=sec.password.get_secret_value(),
            mechanism=sec.mechanism,
            ssl_context=ctx,  # not None -> protocol SASL_SSL
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def kafka_python_kwargs(settings: Settings) -> MaskedKwargs:
    """Security keyword arguments for kafka-python clients
    (``KafkaProducer(**kw)``, ``KafkaConsumer``, ``KafkaAdminClient``)."""
    sec = resolve_security(settings)
    kw: dict[str, Any] = {"security_protocol": sec.protocol}
    if sec.uses_sasl:
        assert sec.password is not None
        kw["sasl_mechanism"] = sec.mechanism
        # kafka-python takes these two for PLAIN and for SCRAM alike
        kw["sasl_plain_username"] = sec.username
        kw["sasl_plain_password"] = sec.password.get_secret_value()
    ctx = build_ssl_context(sec)
    if ctx is not None:
        kw["ssl_context"] = ctx
    return MaskedKwargs(kw)
