"""Client autoconfiguration over the quickstart's HTTPS listener (8443),
with Python's http.client as the client: Thunderbird autoconfig, Outlook
POX Autodiscover, the Apple profile behind Basic authentication, and
hostile requests (DTD entities, oversized bodies, odd paths)."""

import base64
import http.client
import plistlib
import socket
import ssl
import xml.etree.ElementTree as ET

HOST = "127.0.0.1"
HTTPS = 8443
OUTLOOK = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"


def connect(quickstart):
    ctx = ssl.create_default_context(cafile=str(quickstart.cert))
    ctx.check_hostname = False
    return http.client.HTTPSConnection(HOST, HTTPS, context=ctx, timeout=30)


def request(quickstart, method, path, body=None, headers=None):
    conn = connect(quickstart)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def autodiscover_body(address):
    return (f'<?xml version="1.0" encoding="utf-8"?>'
            f'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
            f'<Request><EMailAddress>{address}</EMailAddress>'
            f'<AcceptableResponseSchema>{OUTLOOK}</AcceptableResponseSchema></Request></Autodiscover>').encode()


def test_thunderbird_autoconfig(quickstart):
    response, data = request(
        quickstart, "GET",
        "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.test")
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("application/xml")
    root = ET.fromstring(data)
    provider = root.find("emailProvider")
    assert provider.get("id") == "example.test"
    incoming = {(s.get("type"), s.findtext("port"), s.findtext("socketType"))
                for s in provider.findall("incomingServer")}
    assert ("imap", "9930", "SSL") in incoming and ("imap", "1430", "STARTTLS") in incoming
    outgoing = {(s.findtext("port"), s.findtext("socketType")) for s in provider.findall("outgoingServer")}
    assert ("4650", "SSL") in outgoing and ("5870", "STARTTLS") in outgoing
    # A foreign domain in the query is never reflected.
    response, data = request(
        quickstart, "GET", "/mail/config-v1.1.xml?emailaddress=x%40evil.example")
    assert response.status == 200 and b"evil.example" not in data


def test_outlook_autodiscover(quickstart):
    response, data = request(quickstart, "POST", "/autodiscover/autodiscover.xml",
                             autodiscover_body("alice@example.test"),
                             {"Content-Type": "text/xml"})
    assert response.status == 200
    ns = {"a": OUTLOOK}
    root = ET.fromstring(data)
    protocols = root.findall(".//a:Protocol", ns)
    kinds = {(p.findtext("a:Type", namespaces=ns), p.findtext("a:Port", namespaces=ns)) for p in protocols}
    assert ("IMAP", "9930") in kinds and ("SMTP", "4650") in kinds, data
    assert root.findtext(".//a:LoginName", namespaces=ns) == "alice@example.test"
    # Unknown users of our domain get the same answer: no enumeration.
    _, other = request(quickstart, "POST", "/Autodiscover/Autodiscover.xml",
                       autodiscover_body("nobody@example.test"))
    assert other.replace(b"nobody", b"alice") == data
    # Other domains get an error document, not settings.
    _, foreign = request(quickstart, "POST", "/autodiscover/autodiscover.xml",
                         autodiscover_body("ceo@evil.example"))
    assert b"<ErrorCode>600</ErrorCode>" in foreign and b"evil.example" not in foreign


def test_apple_profile_needs_credentials(quickstart):
    response, _ = request(quickstart, "GET", "/mobileconfig")
    assert response.status == 401
    assert response.getheader("WWW-Authenticate").startswith("Basic")
    bad = base64.b64encode(b"alice@example.test:wrong password").decode()
    response, _ = request(quickstart, "GET", "/mobileconfig", headers={"Authorization": f"Basic {bad}"})
    assert response.status == 401
    password = quickstart.credentials()["alice@example.test"]
    good = base64.b64encode(f"alice@example.test:{password}".encode()).decode()
    response, data = request(quickstart, "GET", "/mobileconfig", headers={"Authorization": f"Basic {good}"})
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/x-apple-aspen-config"
    profile = plistlib.loads(data)
    account = profile["PayloadContent"][0]
    assert account["EmailAddress"] == "alice@example.test"
    assert account["IncomingMailServerPortNumber"] == 9930
    by_type = {p["PayloadType"]: p for p in profile["PayloadContent"]}
    caldav = by_type["com.apple.caldav.account"]
    assert caldav["CalDAVPort"] == 8443 and caldav["CalDAVUseSSL"] is True
    assert caldav["CalDAVPrincipalURL"] == "/dav/principals/alice@example.test/"
    carddav = by_type["com.apple.carddav.account"]
    assert carddav["CardDAVUsername"] == "alice@example.test"
    assert len({p["PayloadUUID"] for p in profile["PayloadContent"]}) == 3
    assert password.encode() not in data


def test_hostile_requests_get_clear_refusals(quickstart):
    laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
              b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
              b'<Autodiscover><Request><EMailAddress>&lol2;</EMailAddress></Request></Autodiscover>')
    response, _ = request(quickstart, "POST", "/autodiscover/autodiscover.xml", laughs)
    assert response.status == 400
    xxe = (b'<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
           b'<Autodiscover><Request><EMailAddress>&xxe;</EMailAddress></Request></Autodiscover>')
    response, data = request(quickstart, "POST", "/autodiscover/autodiscover.xml", xxe)
    assert response.status == 400 and b"root:" not in data

    # A 50 MB body is refused from its announced length, without reading it.
    ctx = ssl.create_default_context(cafile=str(quickstart.cert))
    ctx.check_hostname = False
    with socket.create_connection((HOST, HTTPS), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: 52428800\r\n\r\n" + b"x" * 1000)
            head = tls.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head

    for path in ["/", "/etc/passwd", "/mobileconfig/../../etc/passwd", "//mobileconfig",
                 "/%2e%2e/%2e%2e/etc/passwd", "/.well-known/caldav-nonexistent"]:
        response, _ = request(quickstart, "GET", path)
        assert response.status == 404, path
    response, _ = request(quickstart, "PUT", "/mobileconfig", b"x")
    assert response.status == 405
    response, _ = request(quickstart, "GET", "/.well-known/autoconfig/mail/config-v1.1.xml", b"body")
    assert response.status == 413


def test_mta_sts_policy_matches_the_published_record(quickstart):
    response, data = request(quickstart, "GET", "/.well-known/mta-sts.txt")
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/plain")
    fields = dict(line.split(": ", 1) for line in data.decode().splitlines() if line)
    assert fields == {"version": "STSv1", "mode": "testing", "mx": "localhost", "max_age": "86400"}
    records = quickstart.admin("domain", "dns", "example.test")
    assert "mta-sts.example.test.\tIN CNAME localhost." in records
    assert '_mta-sts.example.test.\tIN TXT "v=STSv1; id=' in records
