//! [`Client`]: the connections (one tonic channel per node address), the shard-map cache
//! per stream, and the two ways a call is sent: to any node (metadata) or to a shard's
//! leader (data), with redirects and retries.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use runnel_proto::v1 as pb;
use runnel_proto::v1::consumer_groups_client::ConsumerGroupsClient;
use runnel_proto::v1::records_client::RecordsClient;
use runnel_proto::v1::stream_admin_client::StreamAdminClient;
use runnel_types::limits::{GET_RECORDS_BYTES_MAX, PUT_RECORDS_BYTES_MAX};
use tonic::transport::{Channel, Endpoint};

use crate::backoff::{Backoff, Jitter};
use crate::error::ClientError;
use crate::router::ShardMap;

/// Largest message the SDK sends or accepts: a full `GetRecords` answer plus framing.
const MESSAGE_BYTES_MAX: usize = GET_RECORDS_BYTES_MAX + PUT_RECORDS_BYTES_MAX;

/// Redirects followed for one call before the SDK refreshes its map instead.
const REDIRECTS_MAX: u32 = 3;

/// Settings shared by everything built from one [`Client`].
///
/// ```
/// use runnel_client::ClientConfig;
/// use std::time::Duration;
///
/// let config = ClientConfig { request_timeout: Duration::from_secs(5), ..ClientConfig::default() };
/// assert_eq!(config.request_timeout, Duration::from_secs(5));
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long to wait for a TCP connection to a node.
    pub connect_timeout: Duration,
    /// How long one unary call may take before it counts as a transport error.
    pub request_timeout: Duration,
    /// How long metadata and read calls keep retrying transient errors.
    pub retry_deadline: Duration,
    /// Delays between retries.
    pub backoff: Backoff,
    /// Seed of the jitter RNG; `None` seeds from the clock. Set it for reproducible runs.
    pub jitter_seed: Option<u64>,
    /// How often an HTTP/2 ping goes to a node while a call or subscription to it is
    /// open. A node that dies without closing the connection (power loss, a cut link)
    /// sends nothing; without pings a subscription would wait on it forever.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection counts as dead: its
    /// calls fail as transport errors and subscriptions resubscribe.
    pub keepalive_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            retry_deadline: Duration::from_secs(30),
            backoff: Backoff::default(),
            jitter_seed: None,
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// A handle on a Runnel cluster. Cheap to clone; clones share connections and caches.
///
/// Connections are made lazily, on the first call to each node, so `new` never blocks.
/// Metadata calls go to any of the given endpoints (the next one after a failure); data
/// calls go to the shard's leader, learnt from `ListShards` and from leader hints.
///
/// ```no_run
/// # async fn demo() -> Result<(), runnel_client::ClientError> {
/// use runnel_client::{Client, ClientConfig};
///
/// let client = Client::new(["127.0.0.1:7100", "127.0.0.1:7101"], ClientConfig::default())?;
/// let streams = client.admin().list_streams().await?;
/// println!("{streams:?}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    config: ClientConfig,
    next_endpoint: AtomicUsize,
    channels: Mutex<HashMap<String, Channel>>,
    maps: Mutex<HashMap<String, Arc<ShardMap>>>,
    jitter: Mutex<Jitter>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded maps stay consistent whatever panicked while holding them.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Client {
    /// A client for the cluster reachable at `endpoints` (`host:port` each; at least one).
    pub fn new<I, S>(endpoints: I, config: ClientConfig) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let endpoints: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        if endpoints.is_empty() {
            return Err(ClientError::Config(
                "at least one endpoint (host:port) is needed".into(),
            ));
        }
        if config.keepalive_interval.is_zero() || config.keepalive_timeout.is_zero() {
            return Err(ClientError::Config(format!(
                "keepalive_interval ({:?}) and keepalive_timeout ({:?}) must be above zero",
                config.keepalive_interval, config.keepalive_timeout
            )));
        }
        for e in &endpoints {
            Endpoint::from_shared(format!("http://{e}")).map_err(|err| {
                ClientError::Config(format!("endpoint {e:?} is not host:port: {err}"))
            })?;
        }
        let jitter = config
            .jitter_seed
            .map_or_else(Jitter::from_clock, Jitter::new);
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                config,
                next_endpoint: AtomicUsize::new(0),
                channels: Mutex::new(HashMap::new()),
                maps: Mutex::new(HashMap::new()),
                jitter: Mutex::new(jitter),
            }),
        })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The seed endpoints given to [`Client::new`].
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The channel to `address`, made on first use and kept.
    pub(crate) fn channel(&self, address: &str) -> Result<Channel, ClientError> {
        let mut channels = lock(&self.inner.channels);
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| ClientError::Protocol(format!("bad node address {address:?}: {e}")))?
            .connect_timeout(self.inner.config.connect_timeout)
            .http2_keep_alive_interval(self.inner.config.keepalive_interval)
            .keep_alive_timeout(self.inner.config.keepalive_timeout);
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    pub(crate) fn records(&self, address: &str) -> Result<RecordsClient<Channel>, ClientError> {
        Ok(RecordsClient::new(self.channel(address)?)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX))
    }

    pub(crate) fn stream_admin(
        &self,
        address: &str,
    ) -> Result<StreamAdminClient<Channel>, ClientError> {
        Ok(StreamAdminClient::new(self.channel(address)?)
            .max_decoding_message_size(MESSAGE_BYTES_MAX))
    }

    pub(crate) fn groups(
        &self,
        address: &str,
    ) -> Result<ConsumerGroupsClient<Channel>, ClientError> {
        Ok(ConsumerGroupsClient::new(self.channel(address)?))
    }

    /// The next seed endpoint, round robin.
    pub(crate) fn any_endpoint(&self) -> String {
        let i = self.inner.next_endpoint.fetch_add(1, Ordering::Relaxed);
        self.inner.endpoints[i % self.inner.endpoints.len()].clone()
    }

    /// A backoff delay for retry `attempt`, at least what the server asked for.
    pub(crate) fn backoff_delay(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        let mut rng = lock(&self.inner.jitter);
        self.inner
            .config
            .backoff
            .delay_at_least(attempt, asked, &mut rng)
    }

    /// A fresh jitter RNG for a background task, derived from this client's.
    pub(crate) fn fork_jitter(&self) -> Jitter {
        Jitter::new(lock(&self.inner.jitter).next_u64())
    }

    /// The cached shard map of `stream`, fetched on first use.
    pub async fn shard_map(&self, stream: &str) -> Result<Arc<ShardMap>, ClientError> {
        if let Some(m) = lock(&self.inner.maps).get(stream) {
            return Ok(m.clone());
        }
        self.refresh_shard_map(stream).await
    }

    /// Fetches the shard map of `stream` again (`ListShards`) and caches it.
    pub async fn refresh_shard_map(&self, stream: &str) -> Result<Arc<ShardMap>, ClientError> {
        let req = pb::ListShardsRequest {
            stream_name: stream.to_string(),
        };
        let resp = self
            .call_any(|c, addr| {
                let req = req.clone();
                async move { answer(&addr, c.stream_admin(&addr)?.list_shards(req).await) }
            })
            .await?;
        let map = Arc::new(ShardMap::from_proto(&resp.shards)?);
        lock(&self.inner.maps).insert(stream.to_string(), map.clone());
        tracing::debug!(stream, shards = resp.shards.len(), "shard map refreshed");
        Ok(map)
    }

    /// Records a leader hint: the next call for the shard goes to `address`.
    pub(crate) fn note_leader(&self, stream: &str, shard_id: &str, address: &str) {
        let mut maps = lock(&self.inner.maps);
        if let Some(m) = maps.get(stream) {
            let mut shards: Vec<_> = m.shards().cloned().collect();
            for s in shards.iter_mut().filter(|s| s.shard_id == shard_id) {
                s.leader = Some(address.to_string());
            }
            maps.insert(stream.to_string(), Arc::new(ShardMap::new(shards)));
        }
    }

    /// Where to send a data call for the shard: its leader, else any endpoint.
    pub(crate) async fn leader_address(&self, stream: &str, shard_id: &str) -> String {
        let known = match self.shard_map(stream).await {
            Ok(m) => m.get(shard_id).and_then(|s| s.leader.clone()),
            Err(_) => None,
        };
        known.unwrap_or_else(|| self.any_endpoint())
    }

    /// A unary metadata call to any node, retried on transient errors (following leader
    /// hints) until [`ClientConfig::retry_deadline`].
    pub(crate) async fn call_any<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Client, String) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.config.retry_deadline;
        let mut address = self.any_endpoint();
        let mut attempt = 0;
        loop {
            let err = match self
                .timed(&address, call(self.clone(), address.clone()))
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if let ClientError::NotLeader {
                leader: Some(l), ..
            } = &err
            {
                address = l.clone();
            } else {
                address = self.any_endpoint();
            }
            attempt += 1;
            if !self.wait_for_retry(&err, attempt, deadline).await {
                return Err(err);
            }
        }
    }

    /// A unary data call to the leader of `shard_id`: follows leader hints at once,
    /// refreshes the map when told to, backs off on transient errors, until
    /// [`ClientConfig::retry_deadline`]. Errors that are not retryable return at once.
    pub(crate) async fn call_shard<T, F, Fut>(
        &self,
        stream: &str,
        shard_id: &str,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Client, String) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.config.retry_deadline;
        let (mut attempt, mut redirects) = (0, 0);
        loop {
            let address = self.leader_address(stream, shard_id).await;
            let err = match self
                .timed(&address, call(self.clone(), address.clone()))
                .await
            {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match &err {
                ClientError::NotLeader {
                    leader: Some(l), ..
                } if redirects < REDIRECTS_MAX => {
                    redirects += 1;
                    self.note_leader(stream, shard_id, l);
                    continue;
                }
                e if e.needs_map_refresh() || matches!(e, ClientError::NotLeader { .. }) => {
                    redirects = 0;
                    let _ = self.refresh_shard_map(stream).await;
                }
                ClientError::Transport { .. } | ClientError::Unavailable { .. } => {
                    // The leader may have moved: learn where it is now.
                    let _ = self.refresh_shard_map(stream).await;
                }
                _ => {}
            }
            attempt += 1;
            if !self.wait_for_retry(&err, attempt, deadline).await {
                return Err(err);
            }
        }
    }

    /// Sleeps before retry `attempt` if `err` is retryable and the deadline allows it.
    pub(crate) async fn wait_for_retry(
        &self,
        err: &ClientError,
        attempt: u32,
        deadline: tokio::time::Instant,
    ) -> bool {
        if !err.is_retryable() || matches!(err, ClientError::IteratorExpired { .. }) {
            return false;
        }
        let delay = self.backoff_delay(attempt.saturating_sub(1), err.retry_after());
        if tokio::time::Instant::now() + delay >= deadline {
            return false;
        }
        tracing::debug!(error = %err, attempt, ?delay, "retrying");
        tokio::time::sleep(delay).await;
        true
    }

    /// `fut` with the request timeout; a timeout is a transport error.
    pub(crate) async fn timed<T>(
        &self,
        address: &str,
        fut: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        crate::time::timeout(self.inner.config.request_timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Transport {
                    address: address.to_string(),
                    message: format!("no answer within {:?}", self.inner.config.request_timeout),
                })
            })
    }

    /// An [`Admin`](crate::Admin) over this client.
    pub fn admin(&self) -> crate::Admin {
        crate::Admin::new(self.clone())
    }

    /// A [`Producer`](crate::Producer) writing to `stream`.
    pub fn producer(
        &self,
        stream: &str,
        config: crate::ProducerConfig,
    ) -> Result<crate::Producer, ClientError> {
        crate::Producer::new(self.clone(), stream, config)
    }

    /// A [`Consumer`](crate::Consumer) reading `stream`.
    pub fn consumer(&self, stream: &str, config: crate::ConsumerConfig) -> crate::Consumer {
        crate::Consumer::new(self.clone(), stream, config)
    }
}

/// The body of a unary answer, or the decoded error.
pub(crate) fn answer<T>(
    address: &str,
    r: Result<tonic::Response<T>, tonic::Status>,
) -> Result<T, ClientError> {
    r.map(tonic::Response::into_inner)
        .map_err(|s| ClientError::from_status(&s, address))
}
