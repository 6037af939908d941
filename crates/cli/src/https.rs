//! A minimal, blocking HTTPS `GET`: just enough for the Helm chart's preStop hook to read
//! a StatefulSet from the Kubernetes API server (see [`crate::k8s`]).
//!
//! Why not a full HTTP client: the hook makes one request per pod shutdown, to one
//! server whose CA the pod's service account hands us. `rustls` with the `ring`
//! provider is the smallest TLS stack that verifies certificates in pure Rust with no
//! system OpenSSL (the image is `FROM scratch`); HTTP/1.1 with `Connection: close` needs
//! no more than a status line, headers and a body (plain or chunked). Everything is
//! bounded: a connect/read timeout and a cap on the answer's size.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// The largest answer read; a StatefulSet document is a few KiB.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Why a request failed (each says what was wrong; none is retried here: the hook
/// decides what a failure means).
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("bad URL {url:?}: {why}")]
    Url { url: String, why: &'static str },
    #[error("bad CA bundle: {0}")]
    Ca(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS with {host}: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error("the answer is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("malformed HTTP answer: {0}")]
    Malformed(&'static str),
}

/// An HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `https://host[:port]/path` split up.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Url<'a> {
    /// Without brackets for IPv6.
    host: &'a str,
    port: u16,
    /// Starts with `/`.
    path: &'a str,
}

fn parse_url(url: &str) -> Result<Url<'_>, HttpsError> {
    let bad = |why| HttpsError::Url {
        url: url.to_string(),
        why,
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or(bad("only https:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']').ok_or(bad("unclosed [ in the host"))?;
        let port = v6[end + 1..].strip_prefix(':');
        (&v6[..end], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None => 443,
        Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
    };
    Ok(Url { host, port, path })
}

/// `GET url` with `Authorization: Bearer token`, trusting only the certificates in
/// `ca_pem` (the service account's `ca.crt`).
pub fn get(
    url: &str,
    bearer_token: &str,
    ca_pem: &[u8],
    timeout: Duration,
) -> Result<Response, HttpsError> {
    let parsed = parse_url(url)?;
    let mut roots = rustls::RootCertStore::empty();
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| HttpsError::Ca(e.to_string()))?;
        roots.add(cert).map_err(|e| HttpsError::Ca(e.to_string()))?;
        found += 1;
    }
    if found == 0 {
        return Err(HttpsError::Ca("no certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpsError::Ca(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name =
        ServerName::try_from(parsed.host.to_string()).map_err(|_| HttpsError::Url {
            url: url.to_string(),
            why: "the host is neither an IP address nor a DNS name",
        })?;
    let tls_err = |source| HttpsError::Tls {
        host: parsed.host.to_string(),
        source,
    };
    let conn = rustls::ClientConnection::new(Arc::new(config), server_name)
        .map_err(|e| tls_err(std::io::Error::other(e)))?;

    let addr_text = format!("{}:{}", parsed.host, parsed.port);
    let connect_err = |source| HttpsError::Connect {
        addr: addr_text.clone(),
        source,
    };
    let addr = (parsed.host, parsed.port)
        .to_socket_addrs()
        .map_err(connect_err)?
        .next()
        .ok_or_else(|| connect_err(std::io::Error::other("the name resolves to no address")))?;
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(connect_err)?;
    tcp.set_read_timeout(Some(timeout)).map_err(connect_err)?;
    tcp.set_write_timeout(Some(timeout)).map_err(connect_err)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);

    let host_header = if parsed.host.contains(':') {
        format!("[{}]:{}", parsed.host, parsed.port)
    } else {
        format!("{}:{}", parsed.host, parsed.port)
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host_header}\r\nAuthorization: Bearer {bearer_token}\r\nAccept: application/json\r\nUser-Agent: runnel-prestop\r\nConnection: close\r\n\r\n",
        parsed.path
    );
    tls.write_all(request.as_bytes()).map_err(tls_err)?;
    tls.flush().map_err(tls_err)?;

    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&chunk[..n]);
                if raw.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpsError::TooLarge);
                }
            }
            // A peer that closes without close_notify after sending its answer: the
            // answer is complete when its framing says so, checked in `parse_response`.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(tls_err(e)),
        }
    }
    parse_response(&raw)
}

/// Status line, headers, then a body framed by `Content-Length`, chunked encoding, or
/// the end of the connection.
fn parse_response(raw: &[u8]) -> Result<Response, HttpsError> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(HttpsError::Malformed("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..head_end])
        .map_err(|_| HttpsError::Malformed("headers are not UTF-8"))?;
    let body = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines
        .next()
        .ok_or(HttpsError::Malformed("no status line"))?;
    let mut parts = status_line.split(' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(HttpsError::Malformed("not an HTTP/1.x status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(HttpsError::Malformed("no status code"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpsError::Malformed("a header line without ':'"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| HttpsError::Malformed("Content-Length is not a number"))?,
            );
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(n) = length {
        body.get(..n)
            .ok_or(HttpsError::Malformed(
                "the body is shorter than Content-Length",
            ))?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, HttpsError> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(HttpsError::Malformed("a chunk size without CRLF"))?;
        let size_text = std::str::from_utf8(&body[..line_end])
            .map_err(|_| HttpsError::Malformed("a chunk size that is not text"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpsError::Malformed("a chunk size that is not hex"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let data = body
            .get(..size)
            .ok_or(HttpsError::Malformed("a chunk shorter than its size"))?;
        out.extend_from_slice(data);
        body = body
            .get(size..)
            .and_then(|b| b.strip_prefix(b"\r\n"))
            .ok_or(HttpsError::Malformed("a chunk without its closing CRLF"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_into_host_port_and_path() {
        assert_eq!(
            parse_url("https://10.0.0.1:6443/apis/x").expect("url"),
            Url {
                host: "10.0.0.1",
                port: 6443,
                path: "/apis/x"
            }
        );
        assert_eq!(
            parse_url("https://[fd00::1]/a").expect("url"),
            Url {
                host: "fd00::1",
                port: 443,
                path: "/a"
            }
        );
        assert!(parse_url("http://x/").is_err());
        assert!(parse_url("https://:80/").is_err());
        assert!(parse_url("https://h:port/").is_err());
    }

    #[test]
    fn answers_are_parsed_with_each_framing() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing";
        assert_eq!(
            parse_response(plain).expect("plain"),
            Response {
                status: 200,
                body: "{}".into()
            }
        );
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).expect("chunked").body, "abcde");
        let to_eof = b"HTTP/1.0 403 Forbidden\r\n\r\nno";
        assert_eq!(parse_response(to_eof).expect("eof").status, 403);
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }
}
