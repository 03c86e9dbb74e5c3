"""Kafka security settings -> Faust credentials and kafka-python kwargs (no broker needed)."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import AuthProtocol, SASLMechanism

from stream_app.kafka.security import (
    KafkaSecurity,
    MaskedKwargs,
    SecurityConfigError,
    faust_broker_credentials,
    kafka_python_kwargs,
    resolve_security,
)
from stream_app.settings import Settings

PASSWORD = "s3cr3t-Pa55w0rd-XYZ"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Settings read SEQSTREAM_* from the environment: start every test without any."""
    import os

    for name in list(os.environ):
        if name.startswith("SEQSTREAM_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A self-signed certificate + key (used as CA and as client certificate)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (needed to make test certificates)")
    d = tmp_path_factory.mktemp("certs")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )
    garbage = d / "garbage.pem"
    garbage.write_text("not a certificate\n")
    return {"cert": str(cert), "key": str(key), "garbage": str(garbage)}


def sasl(**kw) -> Settings:
    base = dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                sasl_username="alice", sasl_password=PASSWORD)
    base.update(kw)
    return Settings(**base)


# --------------------------------------------------------------------------- PLAINTEXT
def test_plaintext_by_default():
    s = Settings()
    assert faust_broker_credentials(s) is None
    assert kafka_python_kwargs(s) == {"security_protocol": "PLAINTEXT"}
    assert credentials_to_aiokafka_auth(None) == {"security_protocol": "PLAINTEXT"}


# --------------------------------------------------------------------------- SASL
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext(mechanism):
    s = sasl(sasl_mechanism=mechanism)
    creds = faust_broker_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol is AuthProtocol.SASL_PLAINTEXT
    assert creds.mechanism is SASLMechanism(mechanism)
    assert (creds.username, creds.password, creds.ssl_context) == ("alice", PASSWORD, None)
    # what Faust hands to aiokafka
    assert credentials_to_aiokafka_auth(creds) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
        "ssl_context": None,
    }
    assert kafka_python_kwargs(s) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
    }


def test_sasl_mechanism_defaults_to_plain():
    s = sasl(sasl_mechanism=None)
    assert resolve_security(s).mechanism == "PLAIN"
    assert faust_broker_credentials(s).mechanism is SASLMechanism.PLAIN
    assert kafka_python_kwargs(s)["sasl_mechanism"] == "PLAIN"


def test_sasl_ssl_uses_one_verifying_context(certs):
    s = sasl(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
             ssl_cafile=certs["cert"])
    creds = faust_broker_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol is AuthProtocol.SASL_SSL
    assert creds.mechanism is SASLMechanism.SCRAM_SHA_256
    for ctx in (creds.ssl_context, kafka_python_kwargs(s)["ssl_context"]):
        assert isinstance(ctx, ssl.SSLContext)
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.check_hostname is True
        assert len(ctx.get_ca_certs()) == 1  # exactly the configured CA
    kw = kafka_python_kwargs(s)
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_plain_password"] == PASSWORD
    assert credentials_to_aiokafka_auth(creds)["security_protocol"] == "SASL_SSL"


def test_ssl_with_client_certificate(certs):
    s = Settings(security_protocol="SSL", ssl_cafile=certs["cert"],
                 ssl_certfile=certs["cert"], ssl_keyfile=certs["key"])
    creds = faust_broker_credentials(s)
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.protocol is AuthProtocol.SSL
    assert creds.context.verify_mode == ssl.CERT_REQUIRED
    auth = credentials_to_aiokafka_auth(creds)
    assert auth == {"security_protocol": "SSL", "ssl_context": creds.context}
    kw = kafka_python_kwargs(s)
    assert set(kw) == {"security_protocol", "ssl_context"}
    assert kw["security_protocol"] == "SSL"


def test_ssl_without_cafile_uses_system_cas():
    s = Settings(security_protocol="SSL")
    ctx = faust_broker_credentials(s).context
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_faust_app_accepts_the_credentials():
    creds = faust_broker_credentials(sasl())
    app = faust.App("seqstream-security-test", broker="kafka://127.0.0.1:1",
                    broker_credentials=creds)
    assert app.conf.broker_credentials is creds


# --------------------------------------------------------------------------- secrets from env / file
def test_password_from_environment(monkeypatch):
    monkeypatch.setenv("SEQSTREAM_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("SEQSTREAM_SASL_USERNAME", "bob")
    monkeypatch.setenv("SEQSTREAM_SASL_PASSWORD", PASSWORD)
    s = Settings()
    assert kafka_python_kwargs(s)["sasl_plain_password"] == PASSWORD
    assert faust_broker_credentials(s).password == PASSWORD


@pytest.mark.parametrize("content", [PASSWORD, PASSWORD + "\n", PASSWORD + "\r\n"])
def test_password_from_file(monkeypatch, tmp_path, content):
    f = tmp_path / "password"
    f.write_bytes(content.encode())
    monkeypatch.setenv("SEQSTREAM_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SEQSTREAM_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("SEQSTREAM_SASL_USERNAME", "bob")
    monkeypatch.setenv("SEQSTREAM_SASL_PASSWORD_FILE", str(f))
    s = Settings()
    assert s.sasl_password is None
    assert resolve_security(s).password.get_secret_value() == PASSWORD
    assert kafka_python_kwargs(s)["sasl_plain_password"] == PASSWORD
    assert faust_broker_credentials(s).password == PASSWORD


def test_password_file_keeps_inner_whitespace(tmp_path):
    f = tmp_path / "pw"
    f.write_text(" a b \n\n")  # only the one trailing newline is dropped
    s = sasl(sasl_password=None, sasl_password_file=str(f))
    assert resolve_security(s).password.get_secret_value() == " a b \n"


def test_kafka_python_kwargs_are_masked(certs):
    s = sasl(security_protocol="SASL_SSL", ssl_cafile=certs["cert"])
    a = kafka_python_kwargs(s)
    assert a["security_protocol"] == "SASL_SSL"
    assert isinstance(a, MaskedKwargs)


def test_overrides_keep_the_secret():
    s = sasl().with_overrides(batch_size=7)
    assert s.batch_size == 7
    assert kafka_python_kwargs(s)["sasl_plain_password"] == PASSWORD


# --------------------------------------------------------------------------- bad settings
def _bad_cases(tmp_path, certs):
    missing = str(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    return {
        "sasl fields without SASL": (
            dict(security_protocol="PLAINTEXT", sasl_username="a", sasl_password=PASSWORD),
            "SEQSTREAM_SASL_USERNAME"),
        "mechanism without SASL": (dict(security_protocol="SSL", sasl_mechanism="PLAIN"),
                                   "SEQSTREAM_SASL_MECHANISM"),
        "tls files without TLS": (dict(security_protocol="SASL_PLAINTEXT", sasl_username="a",
                                       sasl_password=PASSWORD, ssl_cafile=certs["cert"]),
                                  "SEQSTREAM_SSL_CAFILE"),
        "no username": (dict(security_protocol="SASL_SSL", sasl_password=PASSWORD),
                        "SEQSTREAM_SASL_USERNAME"),
        "no password": (dict(security_protocol="SASL_PLAINTEXT", sasl_username="a"),
                        "SEQSTREAM_SASL_PASSWORD"),
        "empty password": (dict(security_protocol="SASL_PLAINTEXT", sasl_username="a",
                                sasl_password=""), "empty"),
        "password twice": (dict(security_protocol="SASL_PLAINTEXT", sasl_username="a",
                                sasl_password=PASSWORD, sasl_password_file=certs["key"]),
                           "both"),
        "password file missing": (dict(security_protocol="SASL_PLAINTEXT", sasl_username="a",
                                       sasl_password_file=missing), missing),
        "password file empty": (dict(security_protocol="SASL_PLAINTEXT", sasl_username="a",
                                     sasl_password_file=str(empty)), "empty"),
        "key without cert": (dict(security_protocol="SSL", ssl_keyfile=certs["key"]),
                             "SEQSTREAM_SSL_CERTFILE"),
        "ca file missing": (dict(security_protocol="SSL", ssl_cafile=missing), missing),
        "ca file not a certificate": (dict(security_protocol="SSL", ssl_cafile=certs["garbage"]),
                                      "SEQSTREAM_SSL_CAFILE"),
        "cert without its key": (dict(security_protocol="SSL", ssl_certfile=certs["garbage"]),
                                 "SEQSTREAM_SSL_CERTFILE"),
    }


BAD_NAMES = ["sasl fields without SASL", "mechanism without SASL", "tls files without TLS",
             "no username", "no password", "empty password", "password twice",
             "password file missing", "password file empty", "key without cert",
             "ca file missing", "ca file not a certificate", "cert without its key"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_inconsistent_settings_are_refused_clearly(name, tmp_path, certs):
    kw, needle = _bad_cases(tmp_path, certs)[name]
    s = Settings(**kw)
    for build in (faust_broker_credentials, kafka_python_kwargs):
        with pytest.raises(SecurityConfigError) as err:
            build(s)
        assert needle in str(err.value)
        assert PASSWORD not in str(err.value)


def test_bad_case_table_is_complete(tmp_path, certs):
    assert sorted(_bad_cases(tmp_path, certs)) == sorted(BAD_NAMES)


# --------------------------------------------------------------------------- never shown
def test_password_never_in_repr_or_logs(tmp_path, certs, caplog):
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD + "\n")
    with_env_pw = sasl(security_protocol="SASL_SSL", ssl_cafile=certs["cert"])
    with_file_pw = sasl(sasl_password=None, sasl_password_file=str(pw_file))
    log = logging.getLogger("seqstream.test")
    shown: list[str] = []
    for s in (with_env_pw, with_file_pw):
        sec = resolve_security(s)
        kw = kafka_python_kwargs(s)
        creds = faust_broker_credentials(s)
        assert kw["sasl_plain_password"] == PASSWORD and creds.password == PASSWORD
        shown += [repr(s), str(s), s.model_dump_json(), str(s.model_dump()),
                  repr(sec), str(sec), repr(kw), str(kw), f"{kw}", repr(creds), str(creds)]
        with caplog.at_level(logging.DEBUG, logger="seqstream.test"):
            log.info("settings %s %r", s, s)
            log.info("security %s kwargs %s %r credentials %s", sec, kw, kw, creds)
    shown.append(caplog.text)
    assert caplog.records, "the log lines were not captured"
    for text in shown:
        assert PASSWORD not in text, text
    assert "**********" in repr(kafka_python_kwargs(with_env_pw))


def test_masked_kwargs_is_a_plain_mapping_for_clients():
    kw = MaskedKwargs(security_protocol="SASL_PLAINTEXT", sasl_plain_password=PASSWORD)

    def client(**kwargs):
        return kwargs

    assert client(**kw)["sasl_plain_password"] == PASSWORD
    assert dict(kw) == {"security_protocol": "SASL_PLAINTEXT", "sasl_plain_password": PASSWORD}
    assert PASSWORD not in repr(kw)
    assert repr(MaskedKwargs(sasl_plain_password=None)) == "MaskedKwargs({'sasl_plain_password': None})"


def test_kafka_security_repr_hides_password():
    sec = KafkaSecurity(protocol="SASL_SSL", username="u", password=resolve_security(sasl()).password)
    assert PASSWORD not in repr(sec)
    assert sec.uses_sasl and sec.uses_tls
