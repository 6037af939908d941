//! [`CliError`]: what went wrong, and [`CliError::hint`]: what to do about it. A
//! [`ClientError`] is decoded here, in one place, into a sentence a person can act on.

use runnel_client::ClientError;
use thiserror::Error;

/// Everything a command can fail with.
#[derive(Debug, Error)]
pub enum CliError {
    /// The command line is wrong (a value, a missing flag): exit code 2.
    #[error("{0}")]
    Usage(String),
    /// A call to the cluster failed; `doing` says what the command was doing.
    #[error("{doing}: {error}")]
    Client { doing: String, error: ClientError },
    /// Reading input or writing output failed.
    #[error("{doing}: {error}")]
    Io {
        doing: String,
        error: std::io::Error,
    },
    /// The command ran but its check failed (records not read back, a drain timed
    /// out, a port in use): exit code 1.
    #[error("{0}")]
    Failed(String),
}

/// Adds "what the command was doing" to a client error.
pub trait Doing<T> {
    /// `Err(e)` becomes [`CliError::Client`] with `doing`.
    fn doing(self, doing: impl FnOnce() -> String) -> Result<T, CliError>;
}

impl<T> Doing<T> for Result<T, ClientError> {
    fn doing(self, doing: impl FnOnce() -> String) -> Result<T, CliError> {
        self.map_err(|error| CliError::Client {
            doing: doing(),
            error,
        })
    }
}

/// Wraps an I/O error with what was being done.
pub fn io(doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
    let doing = doing.into();
    move |error| CliError::Io { doing, error }
}

impl CliError {
    /// The process exit code: 2 for a wrong command line, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_)
            | CliError::Client {
                error: ClientError::InvalidArgument { .. } | ClientError::Config(_),
                ..
            } => 2,
            _ => 1,
        }
    }

    /// Whether the error is only that the reader of our output went away
    /// (`runnel get demo | head`): not worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io { error, .. } if error.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// What to do next, when there is something useful to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            CliError::Client { error, .. } => client_hint(error),
            _ => None,
        }
    }
}

fn client_hint(e: &ClientError) -> Option<String> {
    use ClientError::*;
    let text = match e {
        Transport { address, .. } => format!(
            "no Runnel node answered at {address}. Is one running there? Start a local cluster with `runnel dev`, or point at yours with --endpoint HOST:PORT (or RUNNEL_ENDPOINT)."
        ),
        NotFound { .. } => {
            "check the name: `runnel stream list` lists streams, `runnel cluster nodes` nodes, `runnel group list STREAM` groups.".into()
        }
        AlreadyExists { .. } => {
            "pick another name, or delete the old stream first with `runnel stream delete NAME`.".into()
        }
        InvalidArgument { field, limit, .. } => {
            let mut s = String::from("fix the value");
            if !field.is_empty() {
                s.push_str(&format!(" of {field}"));
            }
            if !limit.is_empty() {
                s.push_str(&format!(" (the limit is {limit})"));
            }
            s.push_str(" and run the command again.");
            s
        }
        StreamNotActive { .. } => {
            "the stream is still being created (or deleted); wait until `runnel stream describe NAME` shows ACTIVE.".into()
        }
        Unavailable { .. } | NotLeader { .. } | StaleShardMap { .. } => {
            "the cluster is electing a leader or moving shards; try again in a few seconds, and see `runnel cluster status` if it persists.".into()
        }
        Throttled { .. } => "the shard is overloaded: slow down or add shards.".into(),
        IteratorExpired { .. } | IteratorInvalid { .. } => {
            "start reading again; iterators last 5 minutes.".into()
        }
        Protocol(m) if m.contains("unimplemented") => {
            "that node does not serve this call: is it a runneld of the same version as this CLI?".into()
        }
        DeadlineExceeded { last, .. } => return client_hint(last),
        Internal { .. } => "a fault on the server: see the node's log (RUST_LOG=debug for more).".into(),
        _ => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_get_a_hint_and_an_exit_code() {
        let e: Result<(), _> = Err(ClientError::Transport {
            address: "127.0.0.1:7100".into(),
            message: "connection refused".into(),
        });
        let e = e.doing(|| "listing streams".into()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("listing streams: transport error")
        );
        assert!(e.hint().is_some_and(|h| h.contains("runnel dev")));
        assert_eq!(e.exit_code(), 1);

        let e = CliError::Client {
            doing: "creating stream x".into(),
            error: ClientError::InvalidArgument {
                field: "shard_count".into(),
                limit: "1 to 4096".into(),
                message: "0".into(),
            },
        };
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.hint()
                .is_some_and(|h| h.contains("shard_count") && h.contains("1 to 4096"))
        );
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
    }

    #[test]
    fn broken_pipe_is_recognised() {
        let e = io("writing")(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(e.is_broken_pipe());
        assert!(!CliError::Failed("x".into()).is_broken_pipe());
    }
}
