//! The workload: producers with random keys and sizes, consumers (polling or push)
//! over the whole stream, and consumer-group members; each on its own client machine,
//! all reporting to the [`Oracle`](crate::oracle::Oracle).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use madsim::rand::{Rng, thread_rng};
use madsim::runtime::Handle;
use madsim::task::JoinHandle;
use runnel_client::{
    Client, ClientConfig, ConsumerConfig, ConsumerGroup, GroupConfig, GroupEvent, ProducerConfig,
    ReadMode, Record, RecordBatch, SeqNo, StartPosition,
};

use crate::cluster::client_ip;
use crate::oracle::{Acked, SharedOracle, lock, now_ms};

pub const STREAM: &str = "chaos";

/// A client of the cluster with short timeouts and jitter from the simulation's RNG.
pub fn client(endpoints: &[String]) -> Client {
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        retry_deadline: Duration::from_secs(10),
        jitter_seed: Some(thread_rng().r#gen()),
        ..ClientConfig::default()
    };
    Client::new(endpoints.iter().cloned(), config).expect("valid endpoints")
}

/// The shape of one seed's workload.
#[derive(Clone, Debug)]
pub struct Shape {
    pub producers: u64,
    pub lanes_per_producer: u64,
    pub consumers: u64,
    pub subscribe: bool,
    pub group_members: u64,
    pub keys: u64,
    pub large_records: bool,
}

impl Shape {
    pub fn random() -> Shape {
        let mut rng = thread_rng();
        Shape {
            producers: rng.gen_range(1..=3),
            lanes_per_producer: rng.gen_range(1..=4),
            consumers: rng.gen_range(1..=2),
            subscribe: rng.gen_bool(0.5),
            group_members: rng.gen_range(0..=2),
            keys: *[4, 64, 100_000].get(rng.gen_range(0..3)).expect("in range"),
            large_records: rng.gen_bool(0.3),
        }
    }
}

/// The running workload.
pub struct Workload {
    stop_producers: Arc<AtomicBool>,
    stop_readers: Arc<AtomicBool>,
    producers: Vec<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
}

impl Workload {
    pub fn start(shape: &Shape, endpoints: &[String], oracle: &SharedOracle) -> Workload {
        let (sp, sr) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let mut w = Workload {
            stop_producers: sp,
            stop_readers: sr,
            producers: Vec::new(),
            readers: Vec::new(),
        };
        let mut ip = 10;
        for p in 0..shape.producers {
            let machine = machine(&mut ip, &format!("producer-{p}"));
            let lanes: Vec<Lane> = (0..shape.lanes_per_producer)
                .map(|lane| Lane {
                    pid: p,
                    lane,
                    shape: shape.clone(),
                    oracle: oracle.clone(),
                    stop: w.stop_producers.clone(),
                })
                .collect();
            w.producers
                .push(machine.spawn(produce(client(endpoints), lanes)));
        }
        for r in 0..shape.consumers {
            let machine = machine(&mut ip, &format!("consumer-{r}"));
            let mode = if shape.subscribe && r == 0 {
                ReadMode::Subscribe
            } else {
                ReadMode::Poll
            };
            let task = consume(
                client(endpoints),
                format!("consumer-{r}"),
                mode,
                oracle.clone(),
                w.stop_readers.clone(),
            );
            w.readers.push(machine.spawn(task));
        }
        for m in 0..shape.group_members {
            let machine = machine(&mut ip, &format!("member-{m}"));
            let task = group_member(client(endpoints), m, oracle.clone(), w.stop_readers.clone());
            w.readers.push(machine.spawn(task));
        }
        w
    }

    /// Stops the producers and waits (boundedly) for their last sends to resolve.
    pub async fn stop_producers(&mut self) {
        self.stop_producers.store(true, Ordering::SeqCst);
        join_all(&mut self.producers).await;
    }

    pub async fn stop_readers(&mut self) {
        self.stop_readers.store(true, Ordering::SeqCst);
        join_all(&mut self.readers).await;
    }
}

async fn join_all(tasks: &mut Vec<JoinHandle<()>>) {
    for t in tasks.drain(..) {
        let _ = madsim::time::timeout(Duration::from_secs(60), t).await;
    }
}

fn machine(next_ip: &mut u64, name: &str) -> madsim::runtime::NodeHandle {
    *next_ip += 1;
    Handle::current()
        .create_node()
        .name(name)
        .ip(client_ip(*next_ip))
        .build()
}

fn producer_config() -> ProducerConfig {
    ProducerConfig {
        linger: Duration::from_millis(2),
        delivery_timeout: Duration::from_secs(15),
        ..ProducerConfig::default()
    }
}

/// One producer (its background task on this machine) shared by its lanes.
async fn produce(client: Client, lanes: Vec<Lane>) {
    let producer = client
        .producer(STREAM, producer_config())
        .expect("a valid producer config");
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|l| tokio::spawn(l.run(producer.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let _ = madsim::time::timeout(Duration::from_secs(20), producer.close()).await;
}

/// One sequential sender of a producer.
struct Lane {
    pid: u64,
    lane: u64,
    shape: Shape,
    oracle: SharedOracle,
    stop: Arc<AtomicBool>,
}

impl Lane {
    async fn run(self, producer: runnel_client::Producer) {
        let mut n = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            let (key, data) = self.next_record(n);
            lock(&self.oracle).send(&data);
            match producer.send(Record::new(key, data.clone())).await {
                Ok(put) => lock(&self.oracle).acked.push(Acked {
                    shard: put.shard_id,
                    seq: put.sequence_number,
                    data,
                    acked_ms: now_ms(),
                }),
                Err(_) => lock(&self.oracle).failed_sends += 1,
            }
            n += 1;
            let pause = thread_rng().gen_range(0..40);
            madsim::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// A unique record: `p{producer}.{lane}.{n}|` then filler of a random size.
    fn next_record(&self, n: u64) -> (String, Bytes) {
        let mut rng = thread_rng();
        let key = format!("key-{}", rng.gen_range(0..self.shape.keys));
        let size = if self.shape.large_records && rng.gen_bool(0.1) {
            rng.gen_range(8_192..65_536)
        } else {
            rng.gen_range(0..512)
        };
        let mut data = format!("p{}.{}.{n}|", self.pid, self.lane).into_bytes();
        data.extend(std::iter::repeat_n(b'a' + (n % 26) as u8, size));
        (key, Bytes::from(data))
    }
}

/// Reads the whole stream from the oldest record, again from the start after a
/// failure, checking per reader that sequence numbers only grow.
async fn consume(
    client: Client,
    name: String,
    mode: ReadMode,
    oracle: SharedOracle,
    stop: Arc<AtomicBool>,
) {
    let config = ConsumerConfig {
        mode,
        idle_poll_interval: Duration::from_millis(100),
        ..ConsumerConfig::default()
    };
    let consumer = client.consumer(STREAM, config);
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut reader) = consumer.read_stream(StartPosition::TrimHorizon).await else {
            madsim::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let mut last: BTreeMap<String, SeqNo> = BTreeMap::new();
        while !stop.load(Ordering::SeqCst) {
            let next = madsim::time::timeout(Duration::from_secs(1), reader.next()).await;
            match next {
                Err(_) => continue,
                Ok(Ok(Some(batch))) => note_batch(&oracle, &name, &batch, &mut last),
                Ok(Ok(None)) => return,
                Ok(Err(_)) => break,
            }
        }
    }
}

fn note_batch(
    oracle: &SharedOracle,
    reader: &str,
    batch: &RecordBatch,
    last: &mut BTreeMap<String, SeqNo>,
) {
    let mut o = lock(oracle);
    for r in &batch.records {
        if let Some(prev) = last.get(&batch.shard_id)
            && r.sequence_number <= *prev
        {
            o.order_violations.push(format!(
                "{reader} read {} @ {} after {prev}",
                batch.shard_id, r.sequence_number
            ));
        }
        last.insert(batch.shard_id.clone(), r.sequence_number);
        o.observe(reader, &batch.shard_id, r.sequence_number, &r.data);
    }
}

/// A consumer-group member: reads what its leases give it, checkpoints each batch.
async fn group_member(client: Client, m: u64, oracle: SharedOracle, stop: Arc<AtomicBool>) {
    let mut config = GroupConfig::new("chaos-group", &format!("member-{m}"));
    config.session_timeout = Duration::from_secs(3);
    config.consumer.idle_poll_interval = Duration::from_millis(100);
    let mut group = ConsumerGroup::join(client, STREAM, config);
    let name = format!("group-member-{m}");
    while !stop.load(Ordering::SeqCst) {
        let Ok(event) = madsim::time::timeout(Duration::from_secs(1), group.next()).await else {
            continue;
        };
        match event {
            Some(GroupEvent::Records(batch)) => {
                note_batch_group(&oracle, &name, &batch);
                if let Some(seq) = batch.last_sequence_number() {
                    let _ = group.checkpoint(&batch.shard_id, seq).await;
                }
            }
            Some(GroupEvent::ShardEnded { shard_id, .. }) => {
                let _ = group.checkpoint_shard_end(&shard_id).await;
            }
            Some(_) => {}
            None => return,
        }
    }
    let _ = madsim::time::timeout(Duration::from_secs(5), group.leave()).await;
}

fn note_batch_group(oracle: &SharedOracle, reader: &str, batch: &RecordBatch) {
    let mut o = lock(oracle);
    for r in &batch.records {
        o.group_seen
            .insert((batch.shard_id.clone(), r.sequence_number));
        o.observe(reader, &batch.shard_id, r.sequence_number, &r.data);
    }
}
