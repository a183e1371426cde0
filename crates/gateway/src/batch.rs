//! Batching the calls of concurrent buyers into one gRPC call (natural batching).
//!
//! An accepted buy costs two gRPC calls (inventory `Reserve`, order `Submit`), and most of
//! their price is per call, not per byte: HTTP/2 framing, HPACK, tonic's codec and a task wake
//! on both sides. Under a rush hundreds of buys wait for those calls at the same moment, so a
//! [`Batcher`] sends them together: `ReserveMany` / `SubmitMany`, one call for many buyers, each
//! item answered on its own exactly as its unary call would have been.
//!
//! Batching never waits to fill a batch. At most `max_in_flight` calls of one kind are out at
//! once; a buy that finds a free slot is sent at once, alone, as the ordinary unary call (so a
//! quiet system has the latency and the traces it had without batching). Only when every slot
//! is taken do buys queue, and the next free slot sends everything queued (up to `max_size`) in
//! one call. The batch size follows the load by itself: one at rest, dozens in a stampede.
//!
//! Each item keeps its own deadline (the batch carries the latest of them; a caller whose budget
//! runs out stops waiting as it would for its own call, and an item whose caller gave up before
//! the batch left is not sent) and its own trace context (sent in the item; the server's span
//! links to every item's caller). A failed batch fails each item with the same status, which the
//! caller's retry policy then handles as for its own call.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use flashsale_telemetry::TRACEPARENT_HEADER;
use tokio::{
    sync::{mpsc, oneshot, Semaphore},
    time::Instant,
};
use tonic::Status;

/// A boxed, sendable future (what [`BatchCall`] returns).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A batch call's answer: one result per item, or the call's own failure.
pub type BatchResult<R> = Result<Vec<Result<R, Status>>, Status>;

/// How one kind of call is sent alone and in a batch.
pub trait BatchCall: Send + Sync + 'static {
    /// The unary call's message.
    type Message: Send + 'static;
    /// The unary call's reply.
    type Reply: Send + 'static;
    /// Label of the kind of call in metrics (`reserve`, `submit`).
    const NAME: &'static str;

    /// Sends one message as the unary call (the request carries deadline and metadata).
    fn one(&self, request: tonic::Request<Self::Message>)
        -> BoxFuture<Result<Self::Reply, Status>>;

    /// Sends several messages, each with its caller's `traceparent` (empty when none), in one
    /// call; answers one result per message, in order.
    fn many(
        &self,
        request: tonic::Request<Vec<(Self::Message, String)>>,
    ) -> BoxFuture<BatchResult<Self::Reply>>;
}

/// How far calls of one kind are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct BatchConfig {
    /// Calls of one kind out at once; when all are out, new ones queue for the next batch.
    pub max_in_flight: usize,
    /// Most items in one batch; 1 turns batching off (every call is sent alone).
    pub max_size: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        // Measured on the 2-core machine (docs/benchmarks.md): 4 in flight left the accept
        // rush waiting for slots, 16–64 were alike; 32 leaves room for several instances.
        Self {
            max_in_flight: 32,
            max_size: 128,
        }
    }
}

/// One queued call: the request as the unary call would send it, its deadline, and where its
/// answer goes.
struct Pending<M, R> {
    request: tonic::Request<M>,
    deadline: Instant,
    reply: oneshot::Sender<Result<R, Status>>,
}

/// The sending side of one kind of call's batching; cheap to clone. The worker task stops when
/// the last clone is dropped.
pub struct Batcher<C: BatchCall> {
    queue: mpsc::Sender<Pending<C::Message, C::Reply>>,
}

impl<C: BatchCall> Clone for Batcher<C> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<C: BatchCall> std::fmt::Debug for Batcher<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("call", &C::NAME).finish()
    }
}

impl<C: BatchCall> Batcher<C> {
    /// Starts the worker of `calls` on the current tokio runtime.
    pub fn spawn(calls: C, config: BatchConfig) -> Self {
        let max_size = config.max_size.max(1);
        let (queue, pending) = mpsc::channel(max_size.saturating_mul(8).max(64));
        tokio::spawn(run(
            Arc::new(calls),
            pending,
            Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            max_size,
        ));
        Self { queue }
    }

    /// Sends `request` (built as for the unary call) alone or in the next batch, and waits for
    /// its answer. `deadline` is the caller's: the batch it rides in carries the latest one.
    pub async fn call(
        &self,
        request: tonic::Request<C::Message>,
        deadline: Instant,
    ) -> Result<tonic::Response<C::Reply>, Status> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            request,
            deadline,
            reply,
        };
        if self.queue.send(pending).await.is_err() {
            return Err(Status::unavailable("gateway is shutting down"));
        }
        match answer.await {
            Ok(result) => result.map(tonic::Response::new),
            Err(_) => Err(Status::unavailable("the call was dropped")),
        }
    }
}

/// The worker: takes the next call, waits for a free slot, takes whatever else queued meanwhile
/// and sends it all in one call on a task of its own.
async fn run<C: BatchCall>(
    calls: Arc<C>,
    mut queue: mpsc::Receiver<Pending<C::Message, C::Reply>>,
    slots: Arc<Semaphore>,
    max_size: usize,
) {
    while let Some(first) = queue.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(max_size.min(queue.len() + 1));
        batch.push(first);
        while batch.len() < max_size {
            match queue.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        // A caller that stopped waiting (its budget ran out) is not sent.
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let calls = Arc::clone(&calls);
        tokio::spawn(async move {
            send(&*calls, batch).await;
            drop(slot);
        });
    }
}

/// Sends one batch (alone as the unary call) and hands each caller its answer.
async fn send<C: BatchCall>(calls: &C, mut batch: Vec<Pending<C::Message, C::Reply>>) {
    metrics::histogram!(flashsale_telemetry::metrics::GATEWAY_CALL_BATCH_SIZE, "call" => C::NAME)
        .record(batch.len() as f64);
    if batch.len() == 1 {
        if let Some(Pending { request, reply, .. }) = batch.pop() {
            // The caller may have stopped waiting; nobody is left to tell.
            let _ = reply.send(calls.one(request).await);
        }
        return;
    }
    let Some(deadline) = batch.iter().map(|p| p.deadline).max() else {
        return;
    };
    let mut replies = Vec::with_capacity(batch.len());
    let mut items = Vec::with_capacity(batch.len());
    for Pending { request, reply, .. } in batch {
        let traceparent = request
            .metadata()
            .get(TRACEPARENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        items.push((request.into_inner(), traceparent));
        replies.push(reply);
    }
    let mut request = tonic::Request::new(items);
    request.set_timeout(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1)),
    );
    match calls.many(request).await {
        Ok(results) => {
            let mut results = results.into_iter();
            for reply in replies {
                let result = results
                    .next()
                    .unwrap_or_else(|| Err(Status::internal("the batch answered too few items")));
                let _ = reply.send(result);
            }
        }
        Err(status) => {
            for reply in replies {
                let _ = reply.send(Err(status.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The batching logic over a scripted call (no network): alone when a slot is free, in one
    //! batch when every slot is taken, answers to the right callers, failures to every item.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use parking_lot::Mutex;

    use super::*;

    /// Doubles each number; records the size of every call; the first call waits for `gate`.
    #[derive(Default)]
    struct Doubler {
        sizes: Mutex<Vec<usize>>,
        gate: Mutex<Option<oneshot::Receiver<()>>>,
        fail_batches: bool,
        started: tokio::sync::Notify,
        calls: AtomicUsize,
    }

    impl BatchCall for Arc<Doubler> {
        type Message = u32;
        type Reply = u32;
        const NAME: &'static str = "test";

        fn one(&self, request: tonic::Request<u32>) -> BoxFuture<Result<u32, Status>> {
            let this = Arc::clone(self);
            Box::pin(async move {
                this.sizes.lock().push(1);
                this.calls.fetch_add(1, Ordering::SeqCst);
                this.started.notify_one();
                let gate = this.gate.lock().take();
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                Ok(request.into_inner() * 2)
            })
        }

        fn many(&self, request: tonic::Request<Vec<(u32, String)>>) -> BoxFuture<BatchResult<u32>> {
            let this = Arc::clone(self);
            Box::pin(async move {
                let items = request.into_inner();
                this.sizes.lock().push(items.len());
                this.calls.fetch_add(1, Ordering::SeqCst);
                if this.fail_batches {
                    return Err(Status::unavailable("down"));
                }
                Ok(items
                    .into_iter()
                    .map(|(n, trace)| {
                        if trace == "bad" {
                            Err(Status::invalid_argument("bad item"))
                        } else {
                            Ok(n * 2)
                        }
                    })
                    .collect())
            })
        }
    }

    fn request(n: u32, traceparent: Option<&str>) -> tonic::Request<u32> {
        let mut request = tonic::Request::new(n);
        if let Some(t) = traceparent {
            request
                .metadata_mut()
                .insert(TRACEPARENT_HEADER, t.parse().unwrap());
        }
        request
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    /// Holds the only slot with one call, queues `n` more, then opens the gate.
    async fn queued_behind_one(doubler: Arc<Doubler>, n: u32) -> Vec<Result<u32, Status>> {
        let (open, gate) = oneshot::channel();
        *doubler.gate.lock() = Some(gate);
        let batcher = Batcher::spawn(
            Arc::clone(&doubler),
            BatchConfig {
                max_in_flight: 1,
                max_size: 128,
            },
        );
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.call(request(1000, None), deadline()).await }
        });
        doubler.started.notified().await;
        let mut queued = Vec::new();
        for i in 0..n {
            let batcher = batcher.clone();
            let trace = if i == 3 { Some("bad") } else { None };
            queued.push(tokio::spawn(async move {
                batcher.call(request(i, trace), deadline()).await
            }));
        }
        // Every queued call is queued before the slot frees: in the channel, or the first of
        // them already taken by the worker, which waits for the slot.
        while batcher.queue.capacity() > batcher.queue.max_capacity() - (n as usize - 1) {
            tokio::task::yield_now().await;
        }
        let _ = open.send(());
        let first = first.await.unwrap().unwrap().into_inner();
        assert_eq!(first, 2000);
        let mut answers = Vec::new();
        for q in queued {
            answers.push(q.await.unwrap().map(tonic::Response::into_inner));
        }
        answers
    }

    #[tokio::test]
    async fn a_call_finding_a_free_slot_goes_alone() {
        let doubler = Arc::new(Doubler::default());
        let batcher = Batcher::spawn(Arc::clone(&doubler), BatchConfig::default());
        for n in 0..5 {
            let answer = batcher.call(request(n, None), deadline()).await.unwrap();
            assert_eq!(answer.into_inner(), n * 2);
        }
        assert_eq!(*doubler.sizes.lock(), vec![1; 5]);
    }

    #[tokio::test]
    async fn calls_queued_behind_a_full_slot_go_in_one_batch_each_answered() {
        let doubler = Arc::new(Doubler::default());
        let answers = queued_behind_one(Arc::clone(&doubler), 20).await;
        assert_eq!(*doubler.sizes.lock(), vec![1, 20]);
        for (i, answer) in answers.into_iter().enumerate() {
            let i = u32::try_from(i).unwrap();
            if i == 3 {
                let status = answer.unwrap_err();
                assert_eq!(status.code(), tonic::Code::InvalidArgument);
            } else {
                assert_eq!(answer.unwrap(), i * 2);
            }
        }
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_item_with_its_status() {
        let doubler = Arc::new(Doubler {
            fail_batches: true,
            ..Doubler::default()
        });
        let answers = queued_behind_one(Arc::clone(&doubler), 7).await;
        assert_eq!(doubler.calls.load(Ordering::SeqCst), 2);
        assert_eq!(answers.len(), 7);
        for answer in answers {
            assert_eq!(answer.unwrap_err().code(), tonic::Code::Unavailable);
        }
    }

    #[tokio::test]
    async fn batches_never_exceed_max_size() {
        let doubler = Arc::new(Doubler::default());
        let (open, gate) = oneshot::channel();
        *doubler.gate.lock() = Some(gate);
        let batcher = Batcher::spawn(
            Arc::clone(&doubler),
            BatchConfig {
                max_in_flight: 1,
                max_size: 8,
            },
        );
        let mut calls = Vec::new();
        calls.push(tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.call(request(0, None), deadline()).await }
        }));
        doubler.started.notified().await;
        for n in 1..=20 {
            let batcher = batcher.clone();
            calls.push(tokio::spawn(async move {
                batcher.call(request(n, None), deadline()).await
            }));
        }
        while batcher.queue.capacity() > batcher.queue.max_capacity() - 19 {
            tokio::task::yield_now().await;
        }
        let _ = open.send(());
        for (n, call) in calls.into_iter().enumerate() {
            let n = u32::try_from(n).unwrap();
            assert_eq!(call.await.unwrap().unwrap().into_inner(), n * 2);
        }
        let sizes = doubler.sizes.lock().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 21);
        assert!(sizes.iter().all(|&s| s <= 8), "{sizes:?}");
        assert_eq!(sizes, vec![1, 8, 8, 4]);
    }
}
