//! The Helm chart's preStop hook: `runnel cluster drain --node-id-from-hostname
//! --only-if-scaled-down=STATEFULSET --wait --timeout=...` (see `docs/operations.md`,
//! "Scale down", and "What the chart expects from runneld", point 2).
//!
//! The rule, a pure function ([`decide`]): drain only when this pod's ordinal is at or
//! beyond the StatefulSet's `spec.replicas` (a scale-down removes the highest pods); do
//! nothing and exit 0 when the ordinal is below it (a restart, a rolling update, an
//! eviction), when the StatefulSet is gone (uninstall) or has 0 replicas (a full stop,
//! as for a cold backup), and when `spec.replicas` cannot be read (a failed preStop
//! hook would only delay the shutdown; the node is then treated as down and its
//! replicas are rebuilt elsewhere after the grace period).
//!
//! Reading `spec.replicas`: [`request`] builds the in-cluster call (API server from
//! `KUBERNETES_SERVICE_HOST`/`_PORT`, namespace, bearer token and CA from the service
//! account files), [`crate::https`] makes it (TLS verified against the service
//! account's `ca.crt`), and [`replicas_from_json`] reads the answer. The chart's Role
//! grants `get` on its own StatefulSet only.

use std::path::Path;

/// Where a pod's service-account files are.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What the API said about the StatefulSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replicas {
    /// `spec.replicas`.
    Count(u32),
    /// 404: the StatefulSet is gone.
    Gone,
    /// It could not be read; why.
    Unknown(String),
}

/// What the hook does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Drain this node: a scale-down removes this pod.
    Drain,
    /// Exit 0 without draining; why (printed).
    Skip(String),
}

/// The rule of the hook (see the module doc).
pub fn decide(ordinal: u64, statefulset: &str, replicas: &Replicas) -> Decision {
    match replicas {
        Replicas::Count(0) => Decision::Skip(format!(
            "statefulset {statefulset} is scaled to 0: a full stop, not a scale-down; not draining"
        )),
        Replicas::Count(n) if ordinal >= u64::from(*n) => Decision::Drain,
        Replicas::Count(n) => Decision::Skip(format!(
            "pod ordinal {ordinal} is below statefulset {statefulset}'s {n} replicas: a restart, not a scale-down; not draining"
        )),
        Replicas::Gone => Decision::Skip(format!(
            "statefulset {statefulset} is gone (uninstall); not draining"
        )),
        Replicas::Unknown(why) => Decision::Skip(format!(
            "cannot read statefulset {statefulset}'s replicas ({why}); not draining"
        )),
    }
}

/// `spec.replicas` of a StatefulSet document (the API's JSON). A StatefulSet without
/// the field has 1 replica, the Kubernetes default.
pub fn replicas_from_json(body: &str) -> Result<u32, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if v.get("kind").and_then(|k| k.as_str()) != Some("StatefulSet") {
        return Err("the answer is not a StatefulSet".into());
    }
    match v.pointer("/spec/replicas") {
        None | Some(serde_json::Value::Null) => Ok(1),
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("spec.replicas is {n}, not a count")),
    }
}

/// The in-cluster GET of one StatefulSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `https://HOST:PORT/apis/apps/v1/namespaces/NS/statefulsets/NAME`.
    pub url: String,
    /// The bearer token.
    pub token: String,
}

/// Builds the request from the pod's environment and service-account files.
pub fn request(
    statefulset: &str,
    env: impl Fn(&str) -> Option<String>,
    sa_dir: &Path,
) -> Result<Request, String> {
    let host = env("KUBERNETES_SERVICE_HOST")
        .ok_or("KUBERNETES_SERVICE_HOST is not set: not running in a Kubernetes pod")?;
    let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
    let read = |name: &str| {
        std::fs::read_to_string(sa_dir.join(name))
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("cannot read {}: {e}", sa_dir.join(name).display()))
    };
    let namespace = read("namespace")?;
    let token = read("token")?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(Request {
        url: format!(
            "https://{host}:{port}/apis/apps/v1/namespaces/{namespace}/statefulsets/{statefulset}"
        ),
        token,
    })
}

/// How long the hook waits for the API server; a failed read only skips the drain.
pub const API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads `spec.replicas` from inside a pod.
#[cfg(not(madsim))]
pub fn fetch_replicas(statefulset: &str) -> Replicas {
    let env = |k: &str| std::env::var(k).ok();
    let sa_dir = Path::new(SERVICE_ACCOUNT_DIR);
    let req = match request(statefulset, env, sa_dir) {
        Ok(req) => req,
        Err(why) => return Replicas::Unknown(why),
    };
    match std::fs::read(sa_dir.join("ca.crt")) {
        Ok(ca) => fetch_replicas_with(&req, &ca, API_TIMEOUT),
        Err(e) => Replicas::Unknown(format!(
            "cannot read {}: {e}",
            sa_dir.join("ca.crt").display()
        )),
    }
}

/// A simulation build carries no TLS stack (nothing in the simulation runs the hook).
#[cfg(madsim)]
pub fn fetch_replicas(_statefulset: &str) -> Replicas {
    Replicas::Unknown("a simulation build has no HTTPS client".into())
}

/// Makes `req`, trusting `ca_pem`, and reads the answer: 200 with a StatefulSet is
/// its count, 404 is gone, anything else is unknown (with the status and the start of
/// the body, which for the API server says what was refused and why).
#[cfg(not(madsim))]
pub fn fetch_replicas_with(req: &Request, ca_pem: &[u8], timeout: std::time::Duration) -> Replicas {
    match crate::https::get(&req.url, &req.token, ca_pem, timeout) {
        Err(e) => Replicas::Unknown(format!("GET {}: {e}", req.url)),
        Ok(resp) if resp.status == 200 => match replicas_from_json(&resp.body) {
            Ok(n) => Replicas::Count(n),
            Err(why) => Replicas::Unknown(format!("GET {}: {why}", req.url)),
        },
        Ok(resp) if resp.status == 404 => Replicas::Gone,
        Ok(resp) => {
            let excerpt: String = resp.body.chars().take(200).collect();
            Replicas::Unknown(format!("GET {}: HTTP {}: {excerpt}", req.url, resp.status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_only_on_a_scale_down() {
        assert_eq!(decide(3, "runnel", &Replicas::Count(3)), Decision::Drain);
        assert_eq!(decide(4, "runnel", &Replicas::Count(3)), Decision::Drain);
        assert!(
            matches!(decide(2, "runnel", &Replicas::Count(3)), Decision::Skip(w) if w.contains("restart"))
        );
        assert!(
            matches!(decide(0, "runnel", &Replicas::Count(0)), Decision::Skip(w) if w.contains("full stop"))
        );
        assert!(
            matches!(decide(5, "runnel", &Replicas::Gone), Decision::Skip(w) if w.contains("gone"))
        );
        assert!(matches!(
            decide(5, "runnel", &Replicas::Unknown("timeout".into())),
            Decision::Skip(w) if w.contains("timeout")
        ));
    }

    #[test]
    fn replicas_are_read_from_the_statefulset_json() {
        let body = r#"{"kind":"StatefulSet","spec":{"replicas":4,"serviceName":"x"}}"#;
        assert_eq!(replicas_from_json(body), Ok(4));
        assert_eq!(
            replicas_from_json(r#"{"kind":"StatefulSet","spec":{}}"#),
            Ok(1)
        );
        assert!(replicas_from_json(r#"{"kind":"Status","code":403}"#).is_err());
        assert!(replicas_from_json(r#"{"kind":"StatefulSet","spec":{"replicas":-1}}"#).is_err());
        assert!(replicas_from_json("<html>").is_err());
    }

    #[test]
    fn the_request_comes_from_the_pod_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("namespace"), "streams\n").expect("write");
        std::fs::write(dir.path().join("token"), "tok").expect("write");
        let env = |k: &str| match k {
            "KUBERNETES_SERVICE_HOST" => Some("10.0.0.1".to_string()),
            "KUBERNETES_SERVICE_PORT" => Some("6443".to_string()),
            _ => None,
        };
        let r = request("runnel", env, dir.path()).expect("request");
        assert_eq!(
            r.url,
            "https://10.0.0.1:6443/apis/apps/v1/namespaces/streams/statefulsets/runnel"
        );
        assert_eq!(r.token, "tok");
        assert!(request("runnel", |_| None, dir.path()).is_err());
    }

    /// A one-shot HTTPS server on 127.0.0.1 with the test CA's certificate, answering
    /// `answer` to the first request and handing the request back.
    #[cfg(not(madsim))]
    fn serve_once(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use std::io::{Read, Write};
        let certs = vec![
            CertificateDer::from_pem_slice(include_bytes!("../tests/fixtures/tls/server.crt"))
                .expect("server cert"),
        ];
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("../tests/fixtures/tls/server.key"))
            .expect("server key");
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handle = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().expect("accept");
            let conn = rustls::ServerConnection::new(std::sync::Arc::new(config)).expect("conn");
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => return String::from_utf8_lossy(&request).into_owned(),
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tls.write_all(answer.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
            String::from_utf8_lossy(&request).into_owned()
        });
        (format!("127.0.0.1:{port}"), handle)
    }

    #[cfg(not(madsim))]
    fn req(addr: &str) -> Request {
        Request {
            url: format!("https://{addr}/apis/apps/v1/namespaces/streams/statefulsets/runnel"),
            token: "sekrit".into(),
        }
    }

    #[cfg(not(madsim))]
    #[test]
    fn replicas_are_fetched_over_verified_tls() {
        let ca = include_bytes!("../tests/fixtures/tls/ca.crt");
        let timeout = std::time::Duration::from_secs(20);

        let (addr, server) = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 44\r\n\r\n{\"kind\":\"StatefulSet\",\"spec\":{\"replicas\":4}}",
        );
        assert_eq!(
            fetch_replicas_with(&req(&addr), ca, timeout),
            Replicas::Count(4)
        );
        let seen = server.join().expect("server");
        assert!(
            seen.starts_with(
                "GET /apis/apps/v1/namespaces/streams/statefulsets/runnel HTTP/1.1\r\n"
            ),
            "{seen}"
        );
        assert!(seen.contains("Authorization: Bearer sekrit\r\n"), "{seen}");

        let (addr, server) = serve_once(
            "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        );
        assert_eq!(
            fetch_replicas_with(&req(&addr), ca, timeout),
            Replicas::Gone
        );
        server.join().expect("server");

        let (addr, server) =
            serve_once("HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden");
        let got = fetch_replicas_with(&req(&addr), ca, timeout);
        assert!(
            matches!(&got, Replicas::Unknown(w) if w.contains("HTTP 403: forbidden")),
            "{got:?}"
        );
        server.join().expect("server");

        // A server whose certificate the service account's CA did not sign is refused.
        let (addr, server) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let other = include_bytes!("../tests/fixtures/tls/other-ca.crt");
        let got = fetch_replicas_with(&req(&addr), other, timeout);
        assert!(
            matches!(&got, Replicas::Unknown(w) if w.contains("TLS")),
            "{got:?}"
        );
        server.join().expect("server");

        // Nobody listening.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr").to_string();
        drop(closed);
        let got = fetch_replicas_with(&req(&addr), ca, timeout);
        assert!(
            matches!(&got, Replicas::Unknown(w) if w.contains("cannot connect")),
            "{got:?}"
        );
    }
}
