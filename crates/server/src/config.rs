//! runneld's configuration: command-line flags, each also a `RUNNEL_*` environment
//! variable, and an optional TOML file whose keys are the long flag names
//! (`admin-listen = "0.0.0.0:7180"`). A flag or variable beats the file; the file beats
//! the default. `runneld` with no flags at all is a single-node cluster serving on
//! 127.0.0.1:7100 with its data in `./runnel-data`.
//!
//! Parsing is separate from resolving (`Flags` → [`Config`]) so that resolution, the
//! part with rules, is a pure function that tests drive directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use runnel_types::NodeId;
use serde::Deserialize;
use thiserror::Error;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7100";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7180";
pub const DEFAULT_DATA_DIR: &str = "./runnel-data";

/// runneld: one node of a Runnel cluster.
#[derive(Debug, Default, Clone, Parser, Deserialize)]
#[command(name = "runneld", version, about, long_about = None)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Flags {
    /// This node's id (a positive integer, unique in the cluster). Default 1.
    #[arg(long, env = "RUNNEL_NODE_ID")]
    pub node_id: Option<u64>,

    /// Take the node id from the hostname's trailing ordinal plus one (`runnel-2` → 3),
    /// as a Kubernetes StatefulSet names its pods.
    #[arg(long, env = "RUNNEL_NODE_ID_FROM_HOSTNAME", conflicts_with = "node_id")]
    #[serde(default)]
    pub node_id_from_hostname: bool,

    /// Address of the gRPC port (clients and peers). Default 127.0.0.1:7100.
    #[arg(long, env = "RUNNEL_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// host:port that peers and clients use to reach this node. Default: --listen.
    #[arg(long, env = "RUNNEL_ADVERTISE")]
    pub advertise: Option<String>,

    /// Address of the admin HTTP port (/metrics, /healthz, /readyz). Default 127.0.0.1:7180.
    #[arg(long, env = "RUNNEL_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Where this node keeps its data. Default ./runnel-data.
    #[arg(long, env = "RUNNEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Bootstrap a new cluster whose meta voters are these nodes, as
    /// `1=host:port,2=host:port,3=host:port` (as etcd's flag of that name).
    /// Ignored once the data directory holds cluster state.
    #[arg(long, env = "RUNNEL_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// Join an existing cluster through any of its members (host:port).
    #[arg(long, env = "RUNNEL_JOIN")]
    pub join: Option<String>,

    /// A label of this node, `key=value`; repeatable. `zone=` spreads replicas over zones.
    #[arg(long = "label", env = "RUNNEL_LABELS", value_delimiter = ',')]
    #[serde(default, rename = "label")]
    pub labels: Vec<String>,

    /// Optional TOML file with the same keys as the long flags.
    #[arg(long, env = "RUNNEL_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Log format: text (default) or json. RUST_LOG selects what is logged.
    #[arg(long, env = "RUNNEL_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Check that the node on this machine answers (GET /healthz on --admin-listen) and
    /// exit 0 if it does, 1 if not: the container image's health check.
    #[arg(long)]
    #[serde(skip)]
    pub health_check: bool,

    /// Replication factor of new streams when a request leaves it out.
    /// Default 3, or 1 on a single-node cluster.
    #[arg(long, env = "RUNNEL_DEFAULT_REPLICATION")]
    pub default_replication: Option<u32>,

    /// The shortest retention a stream of this cluster may have (default 1h; from 1s):
    /// `10s`, `5m`, `1h`, or milliseconds (`1500ms`). Fixed when the cluster is first
    /// bootstrapped (the node that initialises it proposes it; later values are
    /// ignored). Short retention is for tests and demos.
    #[arg(long, env = "RUNNEL_MIN_RETENTION")]
    pub min_retention: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// How this node finds its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Start (or restart) a cluster whose meta voters are these nodes.
    Initial(BTreeMap<NodeId, String>),
    /// Join through a member.
    Join(String),
}

/// The resolved configuration of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node_id: NodeId,
    pub listen: SocketAddr,
    pub advertise: String,
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub bootstrap: Bootstrap,
    pub labels: BTreeMap<String, String>,
    pub log_format: LogFormat,
    pub default_replication: u32,
    /// `--min-retention` in milliseconds; `None` keeps the cluster default (1 hour).
    pub min_retention_ms: Option<u64>,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("invalid --{flag} {value:?}: {problem}")]
    Invalid {
        flag: &'static str,
        value: String,
        problem: String,
    },
}

/// `--min-retention`: a number with a unit (`ms`, `s`, `m`, `h`), between the limits
/// the meta state accepts.
fn parse_min_retention(text: &str) -> Result<u64, ConfigError> {
    use runnel_meta::limits::{RETENTION_MS_MIN_DEFAULT, RETENTION_MS_MIN_FLOOR};
    let bad = |problem: String| invalid("min-retention", text, problem);
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| bad("write a number with a unit, e.g. 10s, 5m, 1h or 1500ms".into()))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad(format!("unknown unit {unit:?}: use ms, s, m or h"))),
    };
    let ms = n.saturating_mul(scale);
    if !(RETENTION_MS_MIN_FLOOR..=RETENTION_MS_MIN_DEFAULT).contains(&ms) {
        return Err(bad(format!(
            "must be between {RETENTION_MS_MIN_FLOOR} ms (1s) and {RETENTION_MS_MIN_DEFAULT} ms (1h)"
        )));
    }
    Ok(ms)
}

fn invalid(
    flag: &'static str,
    value: impl Into<String>,
    problem: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        flag,
        value: value.into(),
        problem: problem.into(),
    }
}

impl Flags {
    /// Reads the TOML file named by `--config`, if any, under the flags.
    pub fn with_file(self) -> Result<Flags, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let file = parse_toml(&path, &text)?;
        Ok(self.over(file))
    }

    /// `self`'s values where set, else `file`'s.
    fn over(self, file: Flags) -> Flags {
        Flags {
            node_id: self.node_id.or(file.node_id),
            node_id_from_hostname: self.node_id_from_hostname || file.node_id_from_hostname,
            listen: self.listen.or(file.listen),
            advertise: self.advertise.or(file.advertise),
            admin_listen: self.admin_listen.or(file.admin_listen),
            data_dir: self.data_dir.or(file.data_dir),
            initial_cluster: self.initial_cluster.or(file.initial_cluster),
            join: self.join.or(file.join),
            labels: if self.labels.is_empty() {
                file.labels
            } else {
                self.labels
            },
            config: self.config,
            health_check: self.health_check,
            log_format: self.log_format.or(file.log_format),
            default_replication: self.default_replication.or(file.default_replication),
            min_retention: self.min_retention.or(file.min_retention),
        }
    }

    /// Applies defaults and checks every value. `hostname` is only read with
    /// `--node-id-from-hostname`.
    pub fn resolve(self, hostname: impl FnOnce() -> Option<String>) -> Result<Config, ConfigError> {
        let node_id = self.resolve_node_id(hostname)?;
        let listen = self
            .listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("default parses"));
        let advertise = self.advertise.clone().unwrap_or_else(|| listen.to_string());
        check_host_port("advertise", &advertise)?;
        let bootstrap = match (&self.initial_cluster, &self.join) {
            (Some(_), Some(_)) => {
                // Both given: a listed id bootstraps, any other joins (the Helm chart
                // passes both to every pod).
                let members =
                    parse_initial_cluster(self.initial_cluster.as_deref().unwrap_or_default())?;
                if members.contains_key(&node_id) {
                    Bootstrap::Initial(members)
                } else {
                    Bootstrap::Join(self.join.clone().unwrap_or_default())
                }
            }
            (Some(ic), None) => Bootstrap::Initial(parse_initial_cluster(ic)?),
            (None, Some(j)) => {
                check_host_port("join", j)?;
                Bootstrap::Join(j.clone())
            }
            (None, None) => Bootstrap::Initial(BTreeMap::from([(node_id, advertise.clone())])),
        };
        if let Bootstrap::Initial(m) = &bootstrap {
            if !m.contains_key(&node_id) {
                return Err(invalid(
                    "initial-cluster",
                    self.initial_cluster.clone().unwrap_or_default(),
                    format!(
                        "it does not list this node ({node_id}); add it, or use --join to join a running cluster"
                    ),
                ));
            }
        }
        let single = matches!(&bootstrap, Bootstrap::Initial(m) if m.len() == 1);
        let default_replication = self
            .default_replication
            .unwrap_or(if single { 1 } else { 3 });
        if default_replication == 0
            || default_replication > runnel_types::limits::REPLICATION_FACTOR_MAX
        {
            return Err(invalid(
                "default-replication",
                default_replication.to_string(),
                format!(
                    "must be between 1 and {}",
                    runnel_types::limits::REPLICATION_FACTOR_MAX
                ),
            ));
        }
        Ok(Config {
            node_id,
            listen,
            advertise,
            admin_listen: self
                .admin_listen
                .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.parse().expect("default parses")),
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            bootstrap,
            labels: parse_labels(&self.labels)?,
            log_format: self.log_format.unwrap_or(LogFormat::Text),
            default_replication,
            min_retention_ms: self
                .min_retention
                .as_deref()
                .map(parse_min_retention)
                .transpose()?,
        })
    }

    fn resolve_node_id(
        &self,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<NodeId, ConfigError> {
        if self.node_id_from_hostname {
            let host = hostname().unwrap_or_default();
            return node_id_from_hostname(&host);
        }
        match self.node_id.unwrap_or(1) {
            0 => Err(invalid("node-id", "0", "node ids start at 1")),
            id => Ok(NodeId(id)),
        }
    }
}

fn parse_toml(path: &Path, text: &str) -> Result<Flags, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::ParseFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// `runnel-2` → node 3: a StatefulSet's pod ordinal plus one, since node ids start at 1.
pub fn node_id_from_hostname(host: &str) -> Result<NodeId, ConfigError> {
    let short = host.split('.').next().unwrap_or_default();
    let ordinal = short.rsplit_once('-').map(|(_, n)| n).unwrap_or_default();
    match ordinal.parse::<u64>() {
        Ok(n) if n < u64::MAX => Ok(NodeId(n + 1)),
        _ => Err(invalid(
            "node-id-from-hostname",
            host,
            "the hostname does not end in -<number> (as a StatefulSet pod's does); pass --node-id instead",
        )),
    }
}

fn check_host_port(flag: &'static str, v: &str) -> Result<(), ConfigError> {
    match v.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(invalid(
            flag,
            v,
            "expected host:port, for example 10.0.0.5:7100",
        )),
    }
}

/// `1=host:port,2=host:port` → members. Whitespace and newlines around entries are
/// allowed (a TOML multi-line string).
pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            invalid(
                "initial-cluster",
                s,
                format!("{part:?} is not id=host:port"),
            )
        })?;
        let id: u64 = id.trim().parse().ok().filter(|&i| i > 0).ok_or_else(|| {
            invalid(
                "initial-cluster",
                s,
                format!("{id:?} is not a node id (a positive integer)"),
            )
        })?;
        check_host_port("initial-cluster", addr.trim())?;
        if out.insert(NodeId(id), addr.trim().to_string()).is_some() {
            return Err(invalid(
                "initial-cluster",
                s,
                format!("node {id} is listed twice"),
            ));
        }
    }
    if out.is_empty() {
        return Err(invalid("initial-cluster", s, "it lists no node"));
    }
    if !matches!(out.len(), 1 | 3 | 5) {
        return Err(invalid(
            "initial-cluster",
            s,
            format!(
                "it lists {} nodes; the meta group has 1, 3 or 5 voters",
                out.len()
            ),
        ));
    }
    Ok(out)
}

fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| invalid("label", l, "expected key=value"))?;
        if k.is_empty() || k.len() > 63 {
            return Err(invalid("label", l, "the key must be 1 to 63 characters"));
        }
        if k == "zone" && v.is_empty() {
            // The Helm chart passes the pod's zone label, empty where the cluster has
            // none: no zone, placement by node only.
            tracing::warn!("--label zone= is empty: replicas are spread over nodes only");
            continue;
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("runneld").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn no_flags_is_a_single_node_cluster() {
        let c = Flags::default().resolve(|| None).unwrap();
        assert_eq!(c.node_id, NodeId(1));
        assert_eq!(c.listen.to_string(), "127.0.0.1:7100");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:7180");
        assert_eq!(c.data_dir, PathBuf::from("./runnel-data"));
        assert_eq!(
            c.bootstrap,
            Bootstrap::Initial(BTreeMap::from([(NodeId(1), "127.0.0.1:7100".into())]))
        );
        assert_eq!(c.default_replication, 1);
        assert_eq!(c.min_retention_ms, None);
    }

    #[test]
    fn min_retention_takes_units_and_refuses_what_the_cluster_would() {
        let ms = |t: &str| {
            flags(&["--min-retention", t])
                .resolve(|| None)
                .map(|c| c.min_retention_ms)
        };
        assert_eq!(ms("10s").unwrap(), Some(10_000));
        assert_eq!(ms("5m").unwrap(), Some(300_000));
        assert_eq!(ms("1h").unwrap(), Some(3_600_000));
        assert_eq!(ms("1500ms").unwrap(), Some(1_500));
        for bad in ["999ms", "2h", "10", "ten s", "10d", ""] {
            let err = ms(bad).expect_err(bad).to_string();
            assert!(err.contains("--min-retention"), "{bad}: {err}");
        }
    }

    #[test]
    fn three_node_flags() {
        let c = flags(&[
            "--node-id",
            "2",
            "--listen",
            "0.0.0.0:7200",
            "--advertise",
            "n2:7200",
            "--initial-cluster",
            "1=n1:7100, 2=n2:7200,3=n3:7300",
            "--label",
            "zone=a",
            "--label",
            "rack=r1",
        ])
        .resolve(|| None)
        .unwrap();
        assert_eq!(c.node_id, NodeId(2));
        assert_eq!(c.advertise, "n2:7200");
        let Bootstrap::Initial(m) = &c.bootstrap else {
            panic!("{:?}", c.bootstrap)
        };
        assert_eq!(m.len(), 3);
        assert_eq!(c.default_replication, 3);
        assert_eq!(c.labels.get("zone").map(String::as_str), Some("a"));
    }

    #[test]
    fn initial_cluster_and_join_together_pick_by_membership() {
        let both = [
            "--initial-cluster",
            "1=a:1,2=b:1,3=c:1",
            "--join",
            "svc:7100",
        ];
        let mut args = vec!["--node-id", "4"];
        args.extend(both);
        assert_eq!(
            flags(&args).resolve(|| None).unwrap().bootstrap,
            Bootstrap::Join("svc:7100".into())
        );
        let mut args = vec!["--node-id", "2"];
        args.extend(both);
        assert!(matches!(
            flags(&args).resolve(|| None).unwrap().bootstrap,
            Bootstrap::Initial(_)
        ));
    }

    #[test]
    fn bad_values_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--node-id", "0"], "--node-id"),
            (&["--initial-cluster", "1=a:1,2=b:1"], "1, 3 or 5"),
            (&["--initial-cluster", "x=a:1"], "not a node id"),
            (&["--initial-cluster", "1=a"], "host:port"),
            (
                &["--node-id", "9", "--initial-cluster", "1=a:1"],
                "does not list this node",
            ),
            (&["--join", "nope"], "--join"),
            (&["--label", "novalue"], "key=value"),
            (&["--default-replication", "9"], "between 1 and 5"),
        ];
        for (args, want) in cases {
            let err = flags(args).resolve(|| None).unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn node_id_from_hostname_reads_the_ordinal() {
        assert_eq!(node_id_from_hostname("runnel-0").unwrap(), NodeId(1));
        assert_eq!(
            node_id_from_hostname("my-runnel-12.runnel-headless.ns.svc").unwrap(),
            NodeId(13)
        );
        assert!(
            node_id_from_hostname("runnel")
                .unwrap_err()
                .to_string()
                .contains("--node-id")
        );
        let c = flags(&["--node-id-from-hostname"])
            .resolve(|| Some("runnel-2".into()))
            .unwrap();
        assert_eq!(c.node_id, NodeId(3));
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file = parse_toml(
            Path::new("t.toml"),
            "node-id = 3\nadmin-listen = \"0.0.0.0:9000\"\ninitial-cluster = \"\"\"\n1=a:1,\n2=b:1,\n3=c:1\n\"\"\"\n",
        )
        .unwrap();
        let c = flags(&["--node-id", "2"])
            .over(file)
            .resolve(|| None)
            .unwrap();
        assert_eq!(c.node_id, NodeId(2));
        assert_eq!(c.admin_listen.to_string(), "0.0.0.0:9000");
        assert!(matches!(c.bootstrap, Bootstrap::Initial(ref m) if m.len() == 3));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let err = parse_toml(Path::new("t.toml"), "nodeid = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nodeid"), "{err}");
    }
}
