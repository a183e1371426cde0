//! Batching the gRPC calls of concurrent buyers into one call ([`flashsale_batch`]).
//!
//! An accepted buy costs two gRPC calls (inventory `Reserve`, order `Submit`), and most of
//! their price is per call, not per byte: HTTP/2 framing, HPACK, tonic's codec and a task wake
//! on both sides. Under a rush hundreds of buys wait for those calls at the same moment, so a
//! [`Batcher`] sends them together: `ReserveMany` / `SubmitMany`, one call for many buyers, each
//! item answered on its own exactly as its unary call would have been.
//!
//! Batching never waits to fill a batch ([`flashsale_batch`]'s natural batching): a buy that
//! finds a free slot is sent at once, alone, as the ordinary unary call (so a quiet system has
//! the latency and the traces it had without batching); only when every slot is taken do buys
//! queue, and the next free slot sends everything queued in one call.
//!
//! Each item keeps its own deadline (the batch carries the latest of them; a caller whose budget
//! runs out stops waiting as it would for its own call, and an item whose caller gave up before
//! the batch left is not sent) and its own trace context (sent in the item; the server's span
//! links to every item's caller). A failed batch fails each item with the same status, which the
//! caller's retry policy then handles as for its own call.

use std::time::Duration;

use flashsale_batch::Batch;
pub use flashsale_batch::{BatchConfig, BoxFuture};
use flashsale_telemetry::TRACEPARENT_HEADER;
use tokio::time::Instant;
use tonic::Status;

/// A batch call's answer: one result per item, or the call's own failure.
pub type BatchResult<R> = Result<Vec<Result<R, Status>>, Status>;

/// How one kind of gRPC call is sent alone and in a batch.
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

/// A [`BatchCall`] as a [`Batch`]: one item goes as the unary call; several go as the batch
/// call, carrying the latest of their deadlines, each with its own trace context.
#[derive(Debug, Clone)]
pub struct Calls<C>(pub C);

/// The batcher of one kind of gRPC call.
pub type Batcher<C> = flashsale_batch::Batcher<Calls<C>>;

impl<C: BatchCall> Batch for Calls<C> {
    /// The request as the unary call would send it, and its caller's deadline.
    type Item = (tonic::Request<C::Message>, Instant);
    type Answer = Result<C::Reply, Status>;

    fn send(&self, mut items: Vec<Self::Item>) -> BoxFuture<Vec<Self::Answer>> {
        metrics::histogram!(flashsale_telemetry::metrics::GATEWAY_CALL_BATCH_SIZE, "call" => C::NAME)
            .record(items.len() as f64);
        if items.len() == 1 {
            if let Some((request, _)) = items.pop() {
                let call = self.0.one(request);
                return Box::pin(async move { vec![call.await] });
            }
        }
        let count = items.len();
        let deadline = items.iter().map(|(_, deadline)| *deadline).max();
        let messages = items
            .into_iter()
            .map(|(request, _)| {
                let traceparent = request
                    .metadata()
                    .get(TRACEPARENT_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                (request.into_inner(), traceparent)
            })
            .collect();
        let mut request = tonic::Request::new(messages);
        if let Some(deadline) = deadline {
            request.set_timeout(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            );
        }
        let call = self.0.many(request);
        Box::pin(async move {
            match call.await {
                Ok(results) => results,
                // A failed batch fails each item with its status; each caller's retry policy
                // decides what to do, as for its own call.
                Err(status) => (0..count).map(|_| Err(status.clone())).collect(),
            }
        })
    }

    fn lost() -> Self::Answer {
        Err(Status::unavailable("the call got no answer"))
    }
}

/// Sends `request` (built as for the unary call) alone or in the next batch, and waits for its
/// answer. `deadline` is the caller's: a batch carries the latest of its items'.
pub async fn call<C: BatchCall>(
    batcher: &Batcher<C>,
    request: tonic::Request<C::Message>,
    deadline: Instant,
) -> Result<tonic::Response<C::Reply>, Status> {
    batcher
        .call((request, deadline))
        .await
        .map(tonic::Response::new)
}

#[cfg(test)]
mod tests {
    //! The unary-or-batch choice over a scripted call (no network): one item goes as the unary
    //! call, several as one batch call with the latest deadline and each item's traceparent;
    //! per-item errors and a failed batch reach the right callers.

    use parking_lot::Mutex;

    use super::*;

    /// What one call carried: unary?, items, traceparents, `grpc-timeout`.
    type Sent = (bool, usize, Vec<String>, Option<String>);

    /// Doubles each number; records what each call carried.
    #[derive(Default)]
    struct Doubler {
        calls: Mutex<Vec<Sent>>,
        fail_batches: bool,
    }

    impl BatchCall for std::sync::Arc<Doubler> {
        type Message = u32;
        type Reply = u32;
        const NAME: &'static str = "test";

        fn one(&self, request: tonic::Request<u32>) -> BoxFuture<Result<u32, Status>> {
            self.calls.lock().push((true, 1, vec![], None));
            let n = request.into_inner();
            Box::pin(async move { Ok(n * 2) })
        }

        fn many(&self, request: tonic::Request<Vec<(u32, String)>>) -> BoxFuture<BatchResult<u32>> {
            let timeout = request
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let items = request.into_inner();
            let traces = items.iter().map(|(_, t)| t.clone()).collect();
            self.calls
                .lock()
                .push((false, items.len(), traces, timeout));
            let fail = self.fail_batches;
            Box::pin(async move {
                if fail {
                    return Err(Status::unavailable("down"));
                }
                Ok(items
                    .into_iter()
                    .map(|(n, _)| {
                        if n == 3 {
                            Err(Status::invalid_argument("bad item"))
                        } else {
                            Ok(n * 2)
                        }
                    })
                    .collect())
            })
        }
    }

    fn item(n: u32, traceparent: Option<&str>, budget_ms: u64) -> (tonic::Request<u32>, Instant) {
        let mut request = tonic::Request::new(n);
        if let Some(t) = traceparent {
            request
                .metadata_mut()
                .insert(TRACEPARENT_HEADER, t.parse().unwrap());
        }
        (request, Instant::now() + Duration::from_millis(budget_ms))
    }

    #[tokio::test]
    async fn one_item_goes_as_the_unary_call() {
        let doubler = std::sync::Arc::new(Doubler::default());
        let calls = Calls(std::sync::Arc::clone(&doubler));
        let answers = calls.send(vec![item(21, None, 500)]).await;
        assert_eq!(
            answers.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            vec![42]
        );
        assert!(doubler.calls.lock()[0].0, "sent as the unary call");
    }

    #[tokio::test]
    async fn several_go_as_one_batch_with_the_latest_deadline_and_each_trace() {
        let doubler = std::sync::Arc::new(Doubler::default());
        let calls = Calls(std::sync::Arc::clone(&doubler));
        let answers = calls
            .send(vec![
                item(1, Some("t1"), 100),
                item(3, None, 200),
                item(5, Some("t5"), 5_000),
            ])
            .await;
        assert_eq!(answers[0].as_ref().unwrap(), &2);
        assert_eq!(
            answers[1].as_ref().unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(answers[2].as_ref().unwrap(), &10);
        let recorded = doubler.calls.lock();
        let (unary, size, traces, timeout) = &recorded[0];
        assert!(!unary);
        assert_eq!(*size, 3);
        assert_eq!(
            traces,
            &vec!["t1".to_owned(), String::new(), "t5".to_owned()]
        );
        // The latest deadline (5 s) rides with the batch: grpc-timeout in milliseconds or finer.
        let timeout = timeout.as_deref().unwrap();
        let (value, unit) = timeout.split_at(timeout.len() - 1);
        let value: u64 = value.parse().unwrap();
        let ms = match unit {
            "m" => value,
            "u" => value / 1000,
            "n" => value / 1_000_000,
            "S" => value * 1000,
            other => panic!("unit {other}"),
        };
        assert!((4_000..=5_000).contains(&ms), "{timeout}");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_item_with_its_status() {
        let doubler = std::sync::Arc::new(Doubler {
            fail_batches: true,
            ..Doubler::default()
        });
        let calls = Calls(std::sync::Arc::clone(&doubler));
        let answers = calls
            .send((0..4).map(|n| item(n, None, 500)).collect())
            .await;
        assert_eq!(answers.len(), 4);
        for answer in answers {
            assert_eq!(answer.unwrap_err().code(), tonic::Code::Unavailable);
        }
    }
}
