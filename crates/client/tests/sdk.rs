//! The SDK against a scripted fake cluster (see `fake/`): redirects to a hinted leader,
//! per-record retries of only what failed, map refreshes on a closed shard, back-pressure,
//! iterator expiry and broken subscriptions resumed after the last record (also when the
//! link goes silently dead: HTTP/2 keepalive), closed parents read before their
//! children, and consumer-group leases. No assertion is on
//! timing; each test has a generous overall bound so that a bug fails instead of hanging.

mod fake;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use fake::{FakeShard, World, lock, shard_name};
use runnel_client::{
    Client, ClientConfig, ClientError, ConsumerConfig, ConsumerGroup, GroupConfig, GroupEvent,
    ProducerConfig, ReadMode, Record, SeqNo, StartPosition,
};
use runnel_proto::v1 as pb;
use runnel_types::HashRange;

const BOUND: Duration = Duration::from_secs(60);

async fn within<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::time::timeout(BOUND, fake::client_side(f))
        .await
        .expect("the test finished within its bound")
}

fn client(addrs: &[String]) -> Client {
    let config = ClientConfig {
        jitter_seed: Some(7),
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    };
    Client::new(addrs.to_vec(), config).expect("valid endpoints")
}

fn one_shard(leader: usize) -> Vec<FakeShard> {
    vec![FakeShard::new(1, HashRange::FULL, leader)]
}

/// Shard 1 (closed) split into 2 and 3 (open).
fn split_shards() -> Vec<FakeShard> {
    let (a, b) = HashRange::FULL
        .split_at(HashRange::FULL.midpoint())
        .expect("midpoint splits");
    let mut parent = FakeShard::new(1, HashRange::FULL, 0);
    parent.open = false;
    let mut left = FakeShard::new(2, a, 0);
    left.parents = vec![shard_name(1)];
    let mut right = FakeShard::new(3, b, 0);
    right.parents = vec![shard_name(1)];
    vec![parent, left, right]
}

#[tokio::test]
async fn producer_follows_the_leader_hint_and_then_goes_straight_there() {
    // Node 0 is advertised as the leader, node 1 really leads.
    let mut shards = one_shard(1);
    shards[0].advertised_leader = 0;
    let (world, addrs) = fake::start(World::new(shards), 2).await;
    let w = world.clone();
    within(async move {
        let producer = client(&addrs[..1])
            .producer("s", ProducerConfig::default())
            .expect("valid config");
        let first: Vec<_> = (0..10)
            .map(|i| producer.send(Record::new(format!("k{i}"), "x")))
            .collect();
        for r in futures::future::join_all(first).await {
            assert_eq!(r.expect("stored").shard_id, shard_name(1));
        }
        let redirected = lock(&w).calls_at(0, "PutRecords");
        assert!(
            redirected >= 1,
            "the first call went to the advertised node"
        );
        for i in 10..20 {
            producer
                .send(Record::new(format!("k{i}"), "x"))
                .await
                .expect("stored");
        }
        let w = lock(&w);
        assert_eq!(
            w.calls_at(0, "PutRecords"),
            redirected,
            "later calls go straight to the hinted leader"
        );
        assert_eq!(w.shards[0].records.len(), 20, "every record stored once");
    })
    .await;
    drop(world);
}

#[tokio::test]
async fn producer_retries_only_the_throttled_record() {
    let mut world = World::new(one_shard(0));
    world.throttle_keys.insert("k3".into());
    let (world, addrs) = fake::start(world, 1).await;
    let w = world.clone();
    within(async move {
        let producer = client(&addrs)
            .producer("s", ProducerConfig::default())
            .expect("valid config");
        let mut handles = Vec::new();
        for i in 0..10 {
            handles.push(
                producer
                    .enqueue(Record::new(format!("k{i}"), format!("d{i}")))
                    .await
                    .expect("queued"),
            );
        }
        producer.flush().await.expect("flushed");
        let mut seqs = BTreeSet::new();
        for h in handles {
            seqs.insert(h.await.expect("stored").sequence_number);
        }
        assert_eq!(seqs.len(), 10);
        let w = lock(&w);
        assert_eq!(
            w.put_attempts.get("k3"),
            Some(&2),
            "the throttled record was sent again"
        );
        for i in (0..10).filter(|i| *i != 3) {
            assert_eq!(
                w.put_attempts.get(&format!("k{i}")),
                Some(&1),
                "k{i} was stored once and not resent"
            );
        }
        assert_eq!(w.shards[0].records.len(), 10);
    })
    .await;
}

#[tokio::test]
async fn producer_refreshes_the_map_after_shard_closed_and_routes_to_children() {
    let mut world = World::new(one_shard(0));
    world.put_shard_closed_once = true;
    world.after_split = Some(split_shards());
    let (world, addrs) = fake::start(world, 1).await;
    let w = world.clone();
    within(async move {
        let producer = client(&addrs)
            .producer("s", ProducerConfig::default())
            .expect("valid config");
        let puts: Vec<_> = (0..20)
            .map(|i| producer.send(Record::new(format!("key-{i}"), "x")))
            .collect();
        let mut shards = BTreeSet::new();
        for r in futures::future::join_all(puts).await {
            shards.insert(r.expect("stored").shard_id);
        }
        assert!(
            shards
                .iter()
                .all(|s| *s == shard_name(2) || *s == shard_name(3)),
            "{shards:?}"
        );
        let w = lock(&w);
        assert!(w.count("ListShards") >= 2, "the map was fetched again");
        assert_eq!(w.shards[1].records.len() + w.shards[2].records.len(), 20);
    })
    .await;
}

#[tokio::test]
async fn try_send_fails_fast_when_the_buffer_is_full_and_invalid_records_fail_at_once() {
    let (_world, addrs) = fake::start(World::new(one_shard(0)), 1).await;
    within(async move {
        let config = ProducerConfig { buffer_records_max: 2, linger: Duration::from_secs(3600), ..ProducerConfig::default() };
        let producer = client(&addrs).producer("s", config).expect("valid config");
        let a = producer.try_send(Record::new("a", "1")).expect("room");
        let b = producer.try_send(Record::new("b", "2")).expect("room");
        assert!(matches!(producer.try_send(Record::new("c", "3")), Err(ClientError::BufferFull(_))));
        producer.flush().await.expect("flushed");
        a.await.expect("stored");
        b.await.expect("stored");
        producer.try_send(Record::new("c", "3")).expect("room again after the results");
        let err = producer.send(Record::new("", "no key")).await.expect_err("empty key refused");
        assert!(matches!(err, ClientError::InvalidArgument { ref field, .. } if field == "partition_key"), "{err}");
        producer.close().await.expect("closed");
        assert!(matches!(producer.try_send(Record::new("d", "4")), Err(ClientError::BufferFull(_) | ClientError::Closed)));
    })
    .await;
}

/// Reads the whole stream until `n` records arrived; returns (shard, key) in order.
async fn read_n(client: Client, mode: ReadMode, n: usize) -> Vec<(String, String)> {
    let config = ConsumerConfig {
        mode,
        idle_poll_interval: Duration::from_millis(10),
        ..ConsumerConfig::default()
    };
    let mut reader = client
        .consumer("s", config)
        .read_stream(StartPosition::TrimHorizon)
        .await
        .expect("reader");
    let mut out = Vec::new();
    while out.len() < n {
        let batch = reader.next().await.expect("read").expect("not ended");
        out.extend(
            batch
                .records
                .iter()
                .map(|r| (batch.shard_id.clone(), r.partition_key.clone())),
        );
    }
    out
}

async fn parents_before_children(mode: ReadMode) {
    let mut world = World::new(split_shards());
    world.page = 2;
    for i in 0..5 {
        world.seed(&shard_name(1), &format!("p{i}"), "parent");
    }
    for i in 0..3 {
        world.seed(&shard_name(2), &format!("l{i}"), "left");
        world.seed(&shard_name(3), &format!("r{i}"), "right");
    }
    let (_world, addrs) = fake::start(world, 1).await;
    let got = within(async move { read_n(client(&addrs), mode, 11).await }).await;
    let keys: Vec<&str> = got.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(
        &keys[..5],
        &["p0", "p1", "p2", "p3", "p4"],
        "the parent comes first, in order: {keys:?}"
    );
    let left: Vec<&str> = got
        .iter()
        .filter(|(s, _)| *s == shard_name(2))
        .map(|(_, k)| k.as_str())
        .collect();
    assert_eq!(left, vec!["l0", "l1", "l2"]);
    assert_eq!(got.len(), 11, "nothing twice");
}

#[tokio::test]
async fn polling_a_stream_reads_a_closed_parent_before_its_children() {
    parents_before_children(ReadMode::Poll).await;
}

#[tokio::test]
async fn subscribing_to_a_stream_reads_a_closed_parent_before_its_children() {
    parents_before_children(ReadMode::Subscribe).await;
}

#[tokio::test]
async fn an_expired_iterator_resumes_after_the_last_delivered_record() {
    let mut world = World::new(one_shard(0));
    world.page = 2;
    world.expire_get_records_call = Some(2);
    let seqs: Vec<SeqNo> = (0..5)
        .map(|i| world.seed(&shard_name(1), &format!("k{i}"), "x"))
        .collect();
    let (world, addrs) = fake::start(world, 1).await;
    let w = world.clone();
    let got = within(async move {
        let config = ConsumerConfig {
            idle_poll_interval: Duration::from_millis(10),
            ..ConsumerConfig::default()
        };
        let mut reader = client(&addrs)
            .consumer("s", config)
            .read_shard(&shard_name(1), StartPosition::TrimHorizon);
        let mut got = Vec::new();
        while got.len() < 5 {
            let batch = reader.next().await.expect("read").expect("open shard");
            got.extend(batch.records.iter().map(|r| r.sequence_number));
        }
        got
    })
    .await;
    assert_eq!(got, seqs, "in order, none skipped, none twice");
    let w = lock(&w);
    let again = &w.iterator_requests[1];
    assert_eq!(
        again.shard_iterator_type,
        pb::ShardIteratorType::AfterSequenceNumber as i32
    );
    assert_eq!(again.starting_sequence_number, seqs[1].to_string());
}

#[tokio::test]
async fn a_broken_subscription_resumes_after_the_last_delivered_record() {
    let mut world = World::new(one_shard(0));
    world.page = 1;
    world.break_subscription_after = Some(2);
    let seqs: Vec<SeqNo> = (0..4)
        .map(|i| world.seed(&shard_name(1), &format!("k{i}"), "x"))
        .collect();
    let (world, addrs) = fake::start(world, 1).await;
    let w = world.clone();
    let got = within(async move {
        let config = ConsumerConfig {
            mode: ReadMode::Subscribe,
            ..ConsumerConfig::default()
        };
        let mut reader = client(&addrs)
            .consumer("s", config)
            .read_shard(&shard_name(1), StartPosition::TrimHorizon);
        let mut got = Vec::new();
        while got.len() < 4 {
            let batch = reader.next().await.expect("read").expect("open shard");
            got.extend(batch.records.iter().map(|r| r.sequence_number));
        }
        got
    })
    .await;
    assert_eq!(got, seqs);
    let w = lock(&w);
    assert_eq!(w.subscribe_requests.len(), 2);
    assert_eq!(
        w.subscribe_requests[1].starting_position,
        pb::ShardIteratorType::AfterSequenceNumber as i32
    );
    assert_eq!(
        w.subscribe_requests[1].starting_sequence_number,
        seqs[1].to_string()
    );
}

#[tokio::test]
async fn a_group_member_resumes_from_the_checkpoint_and_stops_on_a_lost_lease() {
    let mut world = World::new(one_shard(0));
    let seqs: Vec<SeqNo> = (0..3)
        .map(|i| world.seed(&shard_name(1), &format!("k{i}"), "x"))
        .collect();
    world.leases = vec![pb::ShardLease {
        shard_id: shard_name(1),
        lease_counter: 7,
        checkpoint_sequence_number: seqs[0].to_string(),
        ready: true,
    }];
    let (world, addrs) = fake::start(world, 1).await;
    let w = world.clone();
    within(async move {
        let mut config = GroupConfig::new("g", "m1");
        config.consumer.idle_poll_interval = Duration::from_millis(10);
        let mut group = ConsumerGroup::join(client(&addrs), "s", config);
        let acquired = group.next().await.expect("event");
        assert_eq!(
            acquired,
            GroupEvent::LeaseAcquired {
                shard_id: shard_name(1),
                resume_after: Some(seqs[0])
            }
        );
        let batch = loop {
            match group.next().await.expect("event") {
                GroupEvent::Records(b) if !b.records.is_empty() => break b,
                GroupEvent::Records(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        };
        let read: Vec<SeqNo> = batch.records.iter().map(|r| r.sequence_number).collect();
        assert_eq!(read, seqs[1..].to_vec(), "resumed after the checkpoint");
        group
            .checkpoint(&batch.shard_id, seqs[2])
            .await
            .expect("checkpointed");
        {
            let w = lock(&w);
            let c = w.checkpoints.last().expect("one checkpoint");
            assert_eq!(
                (c.lease_counter, c.sequence_number.clone()),
                (7, seqs[2].to_string())
            );
        }
        // The lease moves to another member.
        lock(&w).leases.clear();
        loop {
            match group.next().await.expect("event") {
                GroupEvent::LeaseLost { shard_id } => {
                    assert_eq!(shard_id, shard_name(1));
                    break;
                }
                GroupEvent::Records(b) => assert!(b.records.is_empty(), "nothing new to read"),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(group.leased_shards().is_empty());
        let err = group
            .checkpoint(&shard_name(1), seqs[2])
            .await
            .expect_err("no lease");
        assert!(matches!(err, ClientError::LeaseLost { .. }));
        group.leave().await.expect("left");
        assert!(lock(&w).count("LeaveGroup") == 1);
    })
    .await;
}

#[tokio::test]
async fn admin_answers_are_typed() {
    let (_world, addrs) = fake::start(World::new(split_shards()), 1).await;
    within(async move {
        let admin = client(&addrs).admin();
        let d = admin.describe_stream("s").await.expect("described");
        assert_eq!(d.status, runnel_client::StreamStatus::Active);
        assert_eq!(d.open_shard_count, 2);
        assert_eq!(d.shards.len(), 3);
        assert_eq!(d.retention, Duration::from_secs(86_400));
        assert_eq!(
            admin.list_streams().await.expect("listed"),
            vec!["s".to_string()]
        );
        let err = admin
            .create_stream("x", runnel_client::CreateStream::with_shards(1))
            .await
            .expect_err("fake refuses");
        assert!(!err.is_retryable(), "{err}");
    })
    .await;
}

/// A TCP proxy in front of one address whose connections can be frozen: they stay open
/// but carry nothing more, which is how a powered-off host or a cut link looks from the
/// other end (no FIN, no RST). Connections made after a freeze pass normally.
#[cfg(not(madsim))]
struct FreezingProxy {
    addr: String,
    freezes: tokio::sync::watch::Sender<u64>,
}

#[cfg(not(madsim))]
impl FreezingProxy {
    async fn start(upstream: &str) -> FreezingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address").to_string();
        let (freezes, rx) = tokio::sync::watch::channel(0u64);
        let upstream = upstream.to_string();
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let born = *rx.borrow();
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::spawn(Self::pump(dr, uw, rx.clone(), born));
                tokio::spawn(Self::pump(ur, dw, rx.clone(), born));
            }
        });
        FreezingProxy { addr, freezes }
    }

    /// Copies until the connection is frozen, then holds both ends open forever.
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut freezes: tokio::sync::watch::Receiver<u64>,
        born: u64,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if *freezes.borrow() > born {
                break;
            }
            tokio::select! {
                n = from.read(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if *freezes.borrow() > born || to.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                },
                _ = freezes.changed() => {}
            }
        }
        std::future::pending::<()>().await;
        drop((from, to));
    }

    /// Freezes every connection open now.
    fn freeze(&self) {
        self.freezes.send_modify(|n| *n += 1);
    }
}

#[cfg(not(madsim))]
#[tokio::test]
async fn a_subscription_over_a_dead_link_is_noticed_and_resumed() {
    let mut world = World::new(one_shard(0));
    world.page = 1;
    let first = world.seed(&shard_name(1), "k0", "x");
    let (world, addrs) = fake::start(world, 1).await;
    let proxy = FreezingProxy::start(&addrs[0]).await;
    // Everything, the shard's leader included, is reached through the proxy.
    lock(&world).addrs = vec![proxy.addr.clone()];
    let w = world.clone();
    let got = within(async move {
        let config = ClientConfig {
            jitter_seed: Some(7),
            keepalive_interval: Duration::from_millis(300),
            keepalive_timeout: Duration::from_millis(300),
            ..ClientConfig::default()
        };
        let client = Client::new([proxy.addr.clone()], config).expect("valid endpoint");
        let config = ConsumerConfig {
            mode: ReadMode::Subscribe,
            ..ConsumerConfig::default()
        };
        let mut reader = client
            .consumer("s", config)
            .read_shard(&shard_name(1), StartPosition::TrimHorizon);
        let mut got = Vec::new();
        let batch = reader.next().await.expect("read").expect("open shard");
        got.extend(batch.records.iter().map(|r| r.sequence_number));
        // The subscription is now idle on a link that goes dead; a record arrives that
        // only a new subscription (over a new connection) can deliver.
        proxy.freeze();
        let second = lock(&w).seed(&shard_name(1), "k1", "y");
        let batch = reader.next().await.expect("read").expect("open shard");
        got.extend(batch.records.iter().map(|r| r.sequence_number));
        (got, second)
    })
    .await;
    let (got, second) = got;
    assert_eq!(got, vec![first, second]);
    let w = lock(&world);
    assert_eq!(w.subscribe_requests.len(), 2);
    assert_eq!(
        w.subscribe_requests[1].starting_sequence_number,
        first.to_string()
    );
}

#[test]
fn keepalive_of_zero_is_refused() {
    let config = ClientConfig {
        keepalive_timeout: Duration::ZERO,
        ..ClientConfig::default()
    };
    let err = Client::new(["127.0.0.1:7100"], config)
        .err()
        .expect("a zero keepalive is refused");
    assert!(err.to_string().contains("keepalive"), "{err}");
}
