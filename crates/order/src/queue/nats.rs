//! The order queue on NATS JetStream: a stream of order requests and a durable pull consumer.
//!
//! **Layout.** Each request is one message on `<subject>.<user_id>.<order_id>` (JSON
//! [`OrderRequest`]), published with `Nats-Msg-Id` = order id, so the stream's duplicate window
//! drops a second publish of the same order. The stream keeps at most one message per subject
//! and uses work-queue retention: a message is deleted when the consumer acknowledges it. So,
//! like the `order_queue` journal table, **the stream holds exactly the accepted requests that
//! are not persisted yet**, and a request is found by its subject ([`NatsStream::find`],
//! [`NatsStream::queued`]) — from any process, with no index of its own. The inventory reads it
//! there to rebuild stock and to decide whether a hold's order still exists.
//!
//! **Durability.** [`NatsQueue::publish`] returns only after the JetStream publish
//! acknowledgement: the server has written the message to its file store (one replica). See
//! `docs/decisions.md` for what that survives (a crash of this process, yes; an OS crash within
//! nats-server's `sync_interval`, no).
//!
//! **Consumption.** One durable pull consumer (`durable`, explicit acks) fetches in batches; the
//! order consumer ([`crate::consumer`]) writes a batch, commits, then [`OrderQueue::ack`]s it,
//! which acknowledges each message by the handle it came with and returns once the server has
//! confirmed the last one (and so all before it: no ack is lost in a buffer at a restart).
//! Anything not acknowledged is delivered again: after `ack_wait`, or at once when the queue is
//! reopened (a restart recreates the durable consumer, which starts again at the stream's first
//! message — the oldest request not acknowledged). The order table's keys absorb every
//! redelivery. Because of that restart rule, **one order process consumes a stream** (a second
//! one would reset the first's consumer).
//!
//! **Staleness.** As on the journal, a request accepted more than `max_accept_age_ms` ago is
//! refused before it is published ([`QueueError::Stale`]), and a publish not acknowledged within
//! `publish_timeout_ms` fails. A message the server nevertheless stored later than
//! `max_accept_age_ms + publish_timeout_ms + 1 s` after its acceptance (a publish that timed out
//! and was flushed after a reconnect) was answered with an error, never `202`, so the consumer
//! discards it: no order reaches the table later than the inventory's grace rule allows.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer},
    message::PublishMessage,
    stream::{DiscardPolicy, RetentionPolicy, StorageType},
};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::{
    sync::{mpsc, Mutex},
    task::JoinHandle,
};

use super::{OrderQueue, QueueError};
use crate::{config::NatsQueueConfig, model::OrderRequest};

/// Slack for clocks and scheduling in the consumer's staleness check, in milliseconds.
pub const STALE_MARGIN_MS: i64 = 1_000;

/// The JetStream acknowledgement payload.
const ACK: &[u8] = b"+ACK";

fn nats_error(e: impl std::error::Error + Send + Sync + 'static) -> QueueError {
    QueueError::Nats(Box::new(e))
}

fn timed_out(what: &str) -> QueueError {
    QueueError::Nats(format!("{what} timed out").into())
}

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// The stream of order requests: publishing and lookups, without a consumer (the inventory uses
/// this to see requests not persisted yet).
#[derive(Clone)]
pub struct NatsStream {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    name: String,
    subject: String,
    publish_timeout: Duration,
}

impl std::fmt::Debug for NatsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStream")
            .field("stream", &self.name)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl NatsStream {
    /// Connects to the server and opens the stream, creating it if missing: work-queue
    /// retention, file storage, one replica, one message per subject, the configured duplicate
    /// window.
    pub async fn connect(config: &NatsQueueConfig) -> Result<Self, QueueError> {
        let client = async_nats::ConnectOptions::new()
            .name("flashsale-order-queue")
            .connection_timeout(ms(config.publish_timeout_ms.max(1)))
            .connect(config.url.as_str())
            .await
            .map_err(nats_error)?;
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: config.stream.clone(),
                subjects: vec![format!("{}.>", config.subject)],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                num_replicas: 1,
                max_messages_per_subject: 1,
                discard: DiscardPolicy::Old,
                duplicate_window: ms(config.duplicate_window_ms),
                ..Default::default()
            })
            .await
            .map_err(nats_error)?;
        Ok(Self {
            js,
            stream,
            name: config.stream.clone(),
            subject: config.subject.clone(),
            publish_timeout: ms(config.publish_timeout_ms.max(1)),
        })
    }

    fn subject_of(&self, user_id: i64, order_id: &str) -> String {
        format!("{}.{user_id}.{order_id}", self.subject)
    }

    /// Acknowledges a delivered message and waits for the server to confirm it (a request to
    /// the message's reply subject, which the server answers once it has taken the ack). A
    /// plain ack is a fire-and-forget publish: it can still sit in the client's buffer when
    /// the process stops or the consumer is recreated, and the message then comes again.
    async fn confirm_ack(&self, message: jetstream::Message) -> Result<(), QueueError> {
        let reply = message
            .reply
            .clone()
            .ok_or_else(|| QueueError::Nats("a delivered message has no reply subject".into()))?;
        let client = self.js.client();
        match tokio::time::timeout(self.publish_timeout, client.request(reply, ACK.into())).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(nats_error(e)),
            Err(_) => Err(timed_out("order request acknowledgement")),
        }
    }

    /// The order id in a message subject (its last token).
    fn order_id_of(subject: &str) -> &str {
        subject.rsplit('.').next().unwrap_or_default()
    }

    /// Publishes a request and waits for the JetStream acknowledgement (at most
    /// `publish_timeout_ms`). A duplicate within the window is acknowledged without a new
    /// message.
    pub async fn publish(&self, request: &OrderRequest) -> Result<(), QueueError> {
        let payload = serde_json::to_vec(request).map_err(nats_error)?;
        let publish = PublishMessage::build()
            .message_id(request.order_id.as_str())
            .payload(payload.into());
        let subject = self.subject_of(request.user_id, &request.order_id);
        let acked = tokio::time::timeout(self.publish_timeout, async {
            self.js
                .send_publish(subject, publish)
                .await
                .map_err(nats_error)?
                .await
                .map_err(nats_error)
        })
        .await
        .map_err(|_| timed_out("publish acknowledgement"))??;
        if acked.duplicate {
            tracing::debug!(order_id = %request.order_id, "duplicate order publish dropped by the stream");
        }
        Ok(())
    }

    /// The request queued under `(user_id, order_id)`, if it is still in the stream.
    pub async fn find(
        &self,
        user_id: i64,
        order_id: &str,
    ) -> Result<Option<OrderRequest>, QueueError> {
        self.load(&self.subject_of(user_id, order_id)).await
    }

    async fn load(&self, subject: &str) -> Result<Option<OrderRequest>, QueueError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(message) => decode(&message.payload).map(Some),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(nats_error(e)),
        }
    }

    /// The subjects in the stream matching `filter`.
    async fn subjects(&self, filter: &str) -> Result<Vec<String>, QueueError> {
        let mut subjects = self
            .stream
            .info_with_subjects(filter)
            .await
            .map_err(nats_error)?;
        let mut out = Vec::new();
        while let Some(entry) = subjects.next().await {
            let (subject, _count) = entry.map_err(nats_error)?;
            out.push(subject);
        }
        Ok(out)
    }

    async fn load_all(&self, subjects: &[String]) -> Result<Vec<OrderRequest>, QueueError> {
        let mut out = Vec::with_capacity(subjects.len());
        for subject in subjects {
            // Acknowledged since the listing: gone, which is fine.
            if let Some(request) = self.load(subject).await? {
                out.push(request);
            }
        }
        Ok(out)
    }

    /// The user's requests in the stream, newest first (at most `limit`).
    pub async fn find_for_user(
        &self,
        user_id: i64,
        limit: i64,
    ) -> Result<Vec<OrderRequest>, QueueError> {
        let subjects = self
            .subjects(&format!("{}.{user_id}.*", self.subject))
            .await?;
        let mut requests = self.load_all(&subjects).await?;
        requests.sort_by_key(|r| std::cmp::Reverse(r.accepted_at_ms));
        requests.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(requests)
    }

    /// Every request in the stream (accepted, not yet persisted).
    pub async fn queued(&self) -> Result<Vec<OrderRequest>, QueueError> {
        let subjects = self.subjects(&format!("{}.>", self.subject)).await?;
        self.load_all(&subjects).await
    }

    /// Which of `order_ids` have a request in the stream.
    pub async fn queued_ids(&self, order_ids: &[String]) -> Result<Vec<String>, QueueError> {
        if order_ids.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: HashSet<&str> = order_ids.iter().map(String::as_str).collect();
        let subjects = self.subjects(&format!("{}.>", self.subject)).await?;
        Ok(subjects
            .iter()
            .map(|s| Self::order_id_of(s))
            .filter(|id| wanted.contains(id))
            .map(str::to_owned)
            .collect())
    }

    /// Deletes the stream and everything in it (tests clean up with this).
    pub async fn delete(&self) -> Result<(), QueueError> {
        self.js
            .delete_stream(&self.name)
            .await
            .map(|_| ())
            .map_err(nats_error)
    }
}

fn decode(payload: &[u8]) -> Result<OrderRequest, QueueError> {
    serde_json::from_slice(payload).map_err(nats_error)
}

/// A request delivered by the consumer, with the message to acknowledge.
type Delivered = (OrderRequest, jetstream::Message);

/// The NATS JetStream order queue: [`NatsStream`] plus the durable pull consumer.
pub struct NatsQueue {
    stream: NatsStream,
    deliveries: Mutex<mpsc::Receiver<Delivered>>,
    /// Delivered, not yet acknowledged: the handles [`OrderQueue::ack`] acknowledges by.
    unacked: parking_lot::Mutex<HashMap<String, Vec<jetstream::Message>>>,
    lag: Arc<AtomicI64>,
    max_age_ms: i64,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for NatsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsQueue")
            .field("stream", &self.stream)
            .field("lag", &self.depth())
            .finish_non_exhaustive()
    }
}

impl Drop for NatsQueue {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl NatsQueue {
    /// Opens the stream and the durable consumer and starts fetching (batches of `batch_max`).
    /// Requests delivered to a previous run and never acknowledged are delivered again first.
    /// `max_age_ms` is the staleness rule of [`super::JournalQueue::open`].
    pub async fn open(
        config: &NatsQueueConfig,
        batch_max: usize,
        max_age_ms: i64,
    ) -> Result<Arc<Self>, QueueError> {
        let stream = NatsStream::connect(config).await?;
        let consumer = open_consumer(&stream, config).await?;
        let batch_max = batch_max.max(1);
        let (deliver_tx, deliver_rx) = mpsc::channel(batch_max * 4);
        let discard_after_ms = max_age_ms
            .saturating_add(flashsale_kernel::duration::ms_i64(
                config.publish_timeout_ms,
            ))
            .saturating_add(STALE_MARGIN_MS);
        let mut lag_reader = consumer.clone();
        let initial_lag = lag_reader.info().await.map(lag_of).map_err(nats_error)?;
        let lag = Arc::new(AtomicI64::new(initial_lag));
        let tasks = vec![
            tokio::spawn(fetch(
                consumer.clone(),
                deliver_tx,
                batch_max,
                discard_after_ms,
            )),
            tokio::spawn(watch_lag(
                consumer,
                Arc::clone(&lag),
                ms(config.lag_interval_ms.max(10)),
            )),
        ];
        Ok(Arc::new(Self {
            stream,
            deliveries: Mutex::new(deliver_rx),
            unacked: parking_lot::Mutex::new(HashMap::new()),
            lag,
            max_age_ms,
            tasks,
        }))
    }

    /// The stream this queue publishes to.
    pub fn stream(&self) -> &NatsStream {
        &self.stream
    }

    fn track(&self, delivered: Vec<Delivered>) -> Vec<OrderRequest> {
        let mut unacked = self.unacked.lock();
        delivered
            .into_iter()
            .map(|(request, message)| {
                unacked
                    .entry(request.order_id.clone())
                    .or_default()
                    .push(message);
                request
            })
            .collect()
    }
}

/// The durable consumer, created afresh: a previous run's deliveries that were never
/// acknowledged come again now instead of after `ack_wait`, and no pull request of a dead
/// process is left to be served. Nothing is lost by it: with work-queue retention the stream
/// itself holds every unacknowledged request, and the new consumer starts at the first.
async fn open_consumer(
    stream: &NatsStream,
    config: &NatsQueueConfig,
) -> Result<PullConsumer, QueueError> {
    let consumer_config = pull::Config {
        durable_name: Some(config.durable.clone()),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: ms(config.ack_wait_ms.max(1)),
        max_ack_pending: config.max_ack_pending.max(1),
        ..Default::default()
    };
    if let Ok(mut existing) = stream
        .stream
        .get_consumer::<pull::Config>(&config.durable)
        .await
    {
        if let Ok(info) = existing.info().await {
            if info.num_ack_pending > 0 {
                tracing::info!(
                    pending = info.num_ack_pending,
                    "order requests delivered to a previous run are delivered again"
                );
            }
        }
        stream
            .stream
            .delete_consumer(&config.durable)
            .await
            .map_err(nats_error)?;
    }
    stream
        .stream
        .create_consumer(consumer_config)
        .await
        .map_err(nats_error)
}

/// Pulls messages in batches and hands them to the consumer; reconnects the pull after errors.
async fn fetch(
    consumer: PullConsumer,
    deliver_tx: mpsc::Sender<Delivered>,
    batch_max: usize,
    discard_after_ms: i64,
) {
    loop {
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch_max)
            .messages()
            .await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(e) => {
                tracing::error!(error = %e, "order queue pull failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    // A missed heartbeat, a reconnect, a deleted consumer: pull anew.
                    tracing::warn!(error = %e, "order queue delivery failed; pulling again");
                    break;
                }
            };
            let Some(request) = admit(&message, discard_after_ms).await else {
                continue;
            };
            if deliver_tx.send((request, message)).await.is_err() {
                return; // The queue is gone; unacknowledged messages are redelivered.
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The request in a delivered message, or `None` when it is discarded (undecodable, or stored
/// too late to have been answered `202`; see the module doc).
async fn admit(message: &jetstream::Message, discard_after_ms: i64) -> Option<OrderRequest> {
    let request = match decode(&message.payload) {
        Ok(request) => request,
        Err(e) => {
            tracing::error!(error = %e, subject = %message.subject, "undecodable order request discarded");
            let _ = message.ack().await;
            return None;
        }
    };
    let stored_ms = message
        .info()
        .ok()
        .map(|info| i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0));
    if let Some(stored_ms) = stored_ms {
        let late_ms = stored_ms.saturating_sub(request.accepted_at_ms);
        if late_ms > discard_after_ms {
            tracing::warn!(order_id = %request.order_id, late_ms, "order request stored too late to have been accepted; discarded");
            let _ = message.ack().await;
            return None;
        }
    }
    Some(request)
}

/// Not yet delivered plus delivered and not acknowledged.
fn lag_of(info: &jetstream::consumer::Info) -> i64 {
    i64::try_from(info.num_pending)
        .unwrap_or(i64::MAX)
        .saturating_add(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX))
}

/// Reads the consumer's lag (not yet delivered + delivered, not acknowledged) and reports it.
async fn watch_lag(mut consumer: PullConsumer, lag: Arc<AtomicI64>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match consumer.info().await {
            Ok(info) => {
                let value = lag_of(info);
                lag.store(value, Ordering::Relaxed);
                metrics::gauge!(flashsale_telemetry::metrics::QUEUE_LAG).set(value as f64);
                // The queue-depth gauge means "accepted, not yet written" on every backend.
                metrics::gauge!(flashsale_telemetry::metrics::QUEUE_DEPTH).set(value as f64);
            }
            Err(e) => tracing::warn!(error = %e, "order queue lag unknown"),
        }
    }
}

#[async_trait]
impl OrderQueue for NatsQueue {
    async fn publish(&self, request: OrderRequest) -> Result<(), QueueError> {
        let age_ms = flashsale_storage::now_ms().saturating_sub(request.accepted_at_ms);
        if age_ms > self.max_age_ms {
            tracing::warn!(order_id = %request.order_id, age_ms, "refused a stale order request");
            return Err(QueueError::Stale { age_ms });
        }
        self.stream.publish(&request).await
    }

    async fn next_batch(&self, max: usize) -> Result<Vec<OrderRequest>, QueueError> {
        let mut rx = self.deliveries.lock().await;
        let mut batch = Vec::with_capacity(max);
        rx.recv_many(&mut batch, max.max(1)).await;
        Ok(self.track(batch))
    }

    async fn ready_batch(&self, max: usize) -> Result<Vec<OrderRequest>, QueueError> {
        let mut rx = self.deliveries.lock().await;
        let mut batch = Vec::new();
        while batch.len() < max {
            match rx.try_recv() {
                Ok(delivered) => batch.push(delivered),
                Err(_) => break,
            }
        }
        Ok(self.track(batch))
    }

    async fn ack(&self, order_ids: &[String]) -> Result<(), QueueError> {
        let mut messages: Vec<jetstream::Message> = {
            let mut unacked = self.unacked.lock();
            order_ids
                .iter()
                .filter_map(|id| unacked.remove(id))
                .flatten()
                .collect()
        };
        // Plain acks for all but the last message, then the last one confirmed: the server
        // takes a connection's messages in order and a consumer's acks one after the other, so
        // its answer to the last means it has taken every ack of the batch. One round trip a
        // batch instead of one a message. Not fatal for the caller either way: the server
        // redelivers what it did not take, and the inserts skip it.
        let Some(last) = messages.pop() else {
            return Ok(());
        };
        for message in &messages {
            message.ack().await.map_err(QueueError::Nats)?;
        }
        self.stream.confirm_ack(last).await
    }

    async fn find(&self, user_id: i64, order_id: &str) -> Result<Option<OrderRequest>, QueueError> {
        self.stream.find(user_id, order_id).await
    }

    async fn find_for_user(
        &self,
        user_id: i64,
        limit: i64,
    ) -> Result<Vec<OrderRequest>, QueueError> {
        self.stream.find_for_user(user_id, limit).await
    }

    fn depth(&self) -> i64 {
        self.lag.load(Ordering::Relaxed)
    }
}
