//! The sales feed behind `WatchSales`: every sale with its remaining stock, pushed to the
//! gateways so they answer the sale pages from memory instead of calling the inventory per read.
//!
//! One sampler task per instance reads every known sale's remaining stock every [`INTERVAL`]
//! (only while someone watches; one round trip for all of them on Redis) and publishes the board on a `tokio::sync::watch` channel when
//! it changed. Each watcher's stream starts with a fresh snapshot of the whole board, then
//! sends, after each change of the board, only the sales that differ from what that watcher
//! was last sent — so a watcher gets at most one message per interval however fast stock
//! moves (coalescing), and a slow watcher skips to the latest board instead of queueing.
//!
//! With stock shared in Redis the sampler reads the shared counters, so the feed shows every
//! instance's buys; sales created by other instances join once the catalog refresh learns them.

use std::{
    collections::BTreeMap,
    sync::{Arc, Once},
    time::Duration,
};

use flashsale_proto::inventory as pb;
use futures::{Stream, StreamExt};
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    sale::Sale,
    stock::{StockError, StockStore},
};

/// How often the sampler reads the remaining stock: at most this many messages per watcher.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Every sale by id, as the gateways show it.
pub type Board = BTreeMap<i64, pb::Sale>;

/// The feed of one inventory instance; cheap to clone.
#[derive(Clone)]
pub struct SalesFeed {
    board: watch::Sender<Arc<Board>>,
    sampler: Arc<Once>,
    sales: Arc<RwLock<BTreeMap<i64, Sale>>>,
    stock: Arc<dyn StockStore>,
}

impl std::fmt::Debug for SalesFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesFeed").finish_non_exhaustive()
    }
}

impl SalesFeed {
    /// A feed of these sales (the service's known set) and their stock.
    pub fn new(sales: Arc<RwLock<BTreeMap<i64, Sale>>>, stock: Arc<dyn StockStore>) -> Self {
        Self {
            board: watch::Sender::new(Arc::new(Board::new())),
            sampler: Arc::new(Once::new()),
            sales,
            stock,
        }
    }

    /// A watcher's stream: a snapshot of every sale, then the changed ones, until `stop`. The
    /// sampler starts with the first watcher and ends at `stop`.
    pub async fn watch(
        &self,
        stop: CancellationToken,
    ) -> Result<impl Stream<Item = pb::SalesUpdate> + Send + 'static, StockError> {
        self.sampler.call_once(|| {
            tokio::spawn(run(self.clone(), stop.clone()));
        });
        let mut changes = self.board.subscribe();
        changes.mark_unchanged();
        let previous = Arc::clone(&changes.borrow());
        let snapshot = Arc::new(sample(&self.sales, self.stock.as_ref(), &previous).await?);
        let first = pb::SalesUpdate {
            snapshot: true,
            sales: snapshot.values().cloned().collect(),
        };
        let updates =
            futures::stream::unfold((changes, snapshot), |(mut changes, sent)| async move {
                loop {
                    changes.changed().await.ok()?;
                    let board = Arc::clone(&changes.borrow_and_update());
                    let sales = changed_since(&sent, &board);
                    if !sales.is_empty() {
                        let update = pb::SalesUpdate {
                            snapshot: false,
                            sales,
                        };
                        return Some((update, (changes, board)));
                    }
                }
            });
        Ok(futures::stream::once(async { first })
            .chain(updates)
            .take_until(stop.cancelled_owned()))
    }
}

/// The sales of `board` that `sent` does not hold as they are now.
fn changed_since(sent: &Board, board: &Board) -> Vec<pb::Sale> {
    board
        .values()
        .filter(|sale| sent.get(&sale.id) != Some(*sale))
        .cloned()
        .collect()
}

/// Every known sale with its remaining stock now. A sale the backend does not track at the
/// moment (being rebuilt) keeps the figure of `previous`, or shows 0 when it has none.
async fn sample(
    sales: &RwLock<BTreeMap<i64, Sale>>,
    stock: &dyn StockStore,
    previous: &Board,
) -> Result<Board, StockError> {
    let known: Vec<Sale> = sales.read().values().cloned().collect();
    let ids: Vec<i64> = known.iter().map(|sale| sale.id).collect();
    let counters = stock.remaining_many(&ids).await?;
    let mut board = Board::new();
    for (sale, remaining) in known.into_iter().zip(counters) {
        let remaining =
            remaining.unwrap_or_else(|| previous.get(&sale.id).map_or(0, |s| s.remaining));
        board.insert(sale.id, sale.to_pb(remaining));
    }
    Ok(board)
}

/// The sampler: publishes the board every [`INTERVAL`] when it changed and someone watches.
async fn run(feed: SalesFeed, stop: CancellationToken) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if feed.board.receiver_count() == 0 {
            continue;
        }
        let previous = Arc::clone(&feed.board.borrow());
        match sample(&feed.sales, feed.stock.as_ref(), &previous).await {
            Ok(board) => {
                failing = false;
                feed.board.send_if_modified(|current| {
                    let changed = **current != board;
                    if changed {
                        *current = Arc::new(board);
                    }
                    changed
                });
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "sales feed cannot read the stock; retrying");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale(id: i64, remaining: i64) -> pb::Sale {
        pb::Sale {
            id,
            remaining,
            ..Default::default()
        }
    }

    #[test]
    fn only_created_or_changed_sales_are_sent() {
        let sent: Board = [(1, sale(1, 10)), (2, sale(2, 5))].into();
        let board: Board = [(1, sale(1, 10)), (2, sale(2, 4)), (3, sale(3, 7))].into();
        let changed = changed_since(&sent, &board);
        assert_eq!(changed, vec![sale(2, 4), sale(3, 7)]);
        assert!(changed_since(&board, &board).is_empty());
    }
}
