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
//! Reading `spec.replicas`: [`Request`] is the in-cluster call (API server from
//! `KUBERNETES_SERVICE_HOST`/`_PORT`, namespace and bearer token from the service
//! account files), and [`replicas_from_json`] reads the answer. *Not done yet*: the
//! HTTPS call itself. The CLI carries no TLS client (rustls and its crypto would double
//! its build), so [`fetch_replicas`] reports "not readable" and the hook never drains;
//! until that lands, drain by hand before a scale-down (`runnel cluster drain N --wait`)
//! or set `scaleDown.drain: false`.

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

/// Reads `spec.replicas`. Not done: see the module doc; always `Unknown` for now.
pub fn fetch_replicas(statefulset: &str) -> Replicas {
    let env = |k: &str| std::env::var(k).ok();
    match request(statefulset, env, Path::new(SERVICE_ACCOUNT_DIR)) {
        Err(why) => Replicas::Unknown(why),
        Ok(req) => Replicas::Unknown(format!(
            "this runnel has no HTTPS client to GET {}; drain by hand before scaling down",
            req.url
        )),
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
}
