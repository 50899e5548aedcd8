"""The option groups of `realtime.config.ServerConfig`, each read by one part of the server.

`LLMOptions` (how to reach and drive SGLang; read by `realtime.backends.factory`) and `WebRTCOptions` (ICE and
the calls not yet connected; read by realtime/webrtc/) are declared like every other setting, with
`realtime.settings.setting`, and nested into `ServerConfig` with `group`: their flags and variables are
`realtime serve`'s like the rest. The parsers here turn a flag's text into those groups' values.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from realtime.settings import Section, check, setting


def parse_http_url(text: str) -> str:
    """One ``http(s)://`` URL.

    Raises:
        ValueError: another scheme, or none.
    """
    url = text.strip()
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not an http(s) URL")
    return url


def parse_header_name(text: str) -> str:
    """An HTTP header name (letters, digits, ``-``, ``_``), or empty for none.

    Raises:
        ValueError: any other character.
    """
    name = text.strip()
    if name and not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"{name!r} is not an HTTP header name")
    return name


def parse_engine_arg(spec: str) -> tuple[str, object]:
    """``mem_fraction_static=0.6`` -> ``("mem_fraction_static", 0.6)``: the value parses as JSON when it can.

    Raises:
        ValueError: no ``=`` or an empty key.
    """
    key, sep, raw = spec.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"must be KEY=VALUE, got {spec!r}")
    try:
        value: object = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().replace("-", "_"), value


IceServerSpec = tuple[str, str, str]  # (url, username, credential); empty strings: none


def parse_ice_server(text: str) -> IceServerSpec:
    """One ``--webrtc-ice-server``: ``stun:HOST[:PORT]`` or ``turn[s]:USER:PASSWORD@HOST[:PORT][?transport=]``.

    The TURN username and password are percent-decoded (``%3A`` for a colon, ``%40`` for an ``@``).

    Raises:
        ValueError: another scheme, no host, or a TURN URL without credentials.
    """
    url = text.strip()
    scheme, _, rest = url.partition(":")
    if scheme not in ("stun", "turn", "turns") or not rest.strip("/"):
        raise ValueError(
            f"an ICE server is stun:HOST[:PORT] or turn[s]:USER:PASSWORD@HOST[:PORT], got {url!r}"
        )
    if scheme == "stun":
        if "@" in rest:
            raise ValueError("a STUN server takes no credentials")
        return url, "", ""
    userinfo, at, hostpart = rest.rpartition("@")
    username, colon, password = userinfo.partition(":")
    if not at or not colon or not username or not hostpart:
        raise ValueError("a TURN server needs credentials: turn:USER:PASSWORD@HOST[:PORT]")
    return f"{scheme}:{hostpart}", unquote(username), unquote(password)


def parse_ipv4(text: str) -> str:
    """An IPv4 address in dotted form.

    Raises:
        ValueError: anything else (host names are not resolved: candidates carry addresses).
    """
    return str(ipaddress.IPv4Address(text.strip()))


@dataclass(frozen=True)
class WebRTCOptions:
    """WebRTC calls (``POST /v1/realtime/calls``, docs/PROTOCOL.md §11): ICE, and the calls not yet connected.

    Read by realtime/webrtc/ only. Attributes: the settings below (their ``help``).
    """

    webrtc_ice_servers: tuple[IceServerSpec, ...] = setting(
        (),
        Section.NETWORK,
        "a STUN or TURN server for the server's side of WebRTC calls, repeatable: stun:HOST[:PORT] adds a "
        "server-reflexive candidate (behind a NAT), turn[s]:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp] a "
        "relayed one (behind a firewall; the TURN server is yours to run). aiortc uses the first STUN and the "
        "first TURN server. Prefer the variable for credentials: flags show up in ps",
        flag="--webrtc-ice-server",
        shown_default="none: host candidates only",
        item=parse_ice_server,
        repeat=True,
        metavar="URL",
    )
    webrtc_public_ip: str | None = setting(
        None,
        Section.NETWORK,
        "an IPv4 address to advertise beside every host candidate of a WebRTC answer, for a server behind a "
        "1:1 NAT (a cloud VM's public address mapped to its private one, every UDP port forwarded)",
        shown_default="none: the interfaces' own addresses",
        item=parse_ipv4,
        metavar="IP",
    )
    max_pending_calls: int = setting(
        8,
        Section.LIMITS,
        "WebRTC calls answered but not yet connected (ICE, DTLS and the data channel under way); one more "
        "POST /v1/realtime/calls gets 503 pending_calls_limit_reached. Every call, pending or connected, also "
        "counts against --max-sessions",
        ge=1,
    )
    call_connect_timeout: float = setting(
        15.0,
        Section.LIMITS,
        "seconds a WebRTC call may take from its answer to an open data channel (or, without one, a connected "
        "peer); then it is dropped and its slot freed. A connected peer that vanishes is dropped when ICE "
        "consent checks fail (about 30 s)",
        gt=0,
    )

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class LLMOptions:
    """How to reach and drive the SGLang backends (``--backend sglang`` and ``sglang-engine``).

    Read by `realtime.backends.factory.create_backend` only. Attributes: the settings below (their ``help``).
    """

    sglang_url: str = setting(
        "http://127.0.0.1:30000",
        Section.LLM,
        "base URL of a running SGLang server for --backend sglang",
        metavar="URL",
    )
    model_dir: Path | None = setting(
        None,
        Section.LLM,
        "local model folder with tokenizer.json for prompt ids and transcripts",
        shown_default="--model-path when it is a local folder, else the server's tokenizer_path if local",
    )
    sglang_api_key: str | None = setting(
        None,
        Section.LLM,
        "bearer token of an SGLang started with --api-key (prefer the variable: flags show up in ps)",
        metavar="KEY",
    )
    sglang_admin_api_key: str | None = setting(
        None,
        Section.LLM,
        "bearer token for /abort_request on an SGLang started with --admin-api-key",
        shown_default="--sglang-api-key",
        metavar="KEY",
    )
    sglang_worker_urls: tuple[str, ...] = setting(
        (),
        Section.LLM,
        "when --sglang-url is an SGLang Model Gateway (smg), the SGLang workers behind it: a cancelled "
        "response is aborted on them directly (smg does not route /abort_request)",
        shown_default="the gateway's own GET /workers list",
        item=parse_http_url,
        metavar="URL[,URL...]",
    )
    sglang_affinity_header: str = setting(
        "x-smg-routing-key",
        Section.LLM,
        "request header carrying the session's id on every /generate, so a gateway started with "
        "--routing-key-override keeps a session on the worker holding its prompt prefix; an empty flag value "
        "sends none",
        item=parse_header_name,
        metavar="HEADER",
    )
    sglang_timeout: float = setting(
        60.0, Section.LLM, "seconds to wait for SGLang's next chunk before failing the response", gt=0
    )
    top_p: float | None = setting(
        None,
        Section.LLM,
        "server-wide nucleus sampling top_p (the Realtime API has no such field)",
        shown_default="the model's 0.9",
        gt=0,
        le=1,
    )
    repetition_penalty: float | None = setting(
        None,
        Section.LLM,
        "server-wide repetition penalty (the Realtime API has no such field)",
        shown_default="the model's 1.05",
        gt=0,
    )
    audio_check: bool = setting(
        True,
        Section.LLM,
        "fail a response whose reported prompt length shows SGLang dropped the user audio (audio_dropped); "
        "--no-audio-check, or the variable set to false, turns the check off",
        flag="--no-audio-check",
        shown_default="on",
    )
    engine_args: tuple[tuple[str, object], ...] = setting(
        (),
        Section.LLM,
        "extra sglang.Engine / ServerArgs argument for --backend sglang-engine, e.g. mem_fraction_static=0.6 or "
        "load_format=dummy (JSON values are parsed); repeatable",
        flag="--engine-arg",
        item=parse_engine_arg,
        repeat=True,
        separator=";",
        metavar="KEY=VALUE",
    )

    def __post_init__(self) -> None:
        check(self)
