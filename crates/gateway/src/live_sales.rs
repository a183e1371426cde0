//! The sale pages, answered from this gateway's memory and kept current by the inventory's push.
//!
//! The sale page's data (`GET /api/v1/sales/{id}`, `GET /api/v1/sales`) is what the stampede
//! refreshes. The gateway follows the inventory's `WatchSales` stream ([`follow`]): a snapshot of
//! every sale with its remaining stock, then the sales that changed, at most ten times a second.
//! Each change renders the sale's JSON and tag once ([`Tagged`]), so a read costs a map lookup and
//! a reference-counted body — no call to the inventory, no serialisation, no hashing.
//!
//! While the stream is down (the inventory restarting, before the first snapshot) the pages are
//! not trusted: [`LiveSales::page`] and [`LiveSales::list`] answer `None` and the handlers ask the
//! inventory as before. Once live, an id the snapshot does not hold is answered `404` locally
//! (a flood of unknown ids never reaches the inventory). A sale created through this gateway is
//! known here at once; one created through another gateway within a feed interval (100 ms), or,
//! when that gateway's inventory instance is another one (stock shared in Redis), once this
//! gateway's instance has learned it (`inventory.catalog_refresh_ms`, 1 s) plus an interval.
//!
//! The same changes feed the live stream of a sale (`GET /api/v1/sales/{id}/events`, Server-Sent
//! Events): one `tokio::sync::watch` channel per watched sale holds only the latest page, so a
//! subscriber that reads slowly skips to the newest state and an idle subscriber costs its
//! connection and a receiver — nothing queues.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use axum::response::{
    sse::{Event, KeepAlive, Sse},
    IntoResponse, Response,
};
use flashsale_proto::inventory::{
    self as pb, inventory_client::InventoryClient, WatchSalesRequest,
};
use flashsale_registry::Balanced;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::{api::Sale, conditional::Tagged, error::ApiError, sales_cache::SaleCache};

/// How long to wait before watching again after the stream ended or failed.
const REWATCH_AFTER: Duration = Duration::from_secs(1);

/// The pages as of one update of the feed.
#[derive(Debug)]
struct Pages {
    /// Whether they follow a snapshot on a stream that is still open.
    live: bool,
    /// Every sale, with its rendered page.
    sales: BTreeMap<i64, (pb::Sale, Arc<Tagged>)>,
    /// The rendered sale list.
    list: Arc<Tagged>,
}

/// The gateway's sale pages; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LiveSales(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    pages: ArcSwap<Pages>,
    /// One channel per sale someone watches (`/events`), holding its latest page.
    streams: Mutex<HashMap<i64, watch::Sender<Arc<Tagged>>>>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            pages: ArcSwap::from_pointee(Pages {
                live: false,
                sales: BTreeMap::new(),
                list: Arc::new(Tagged::from_body(b"[]".to_vec())),
            }),
            streams: Mutex::new(HashMap::new()),
        }
    }
}

impl LiveSales {
    /// No pages yet, not live.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the pages follow the inventory right now.
    pub fn is_live(&self) -> bool {
        self.0.pages.load().live
    }

    /// The sale's page while live: `Some(None)` when the sale does not exist, `None` when the
    /// pages are not live (ask the inventory).
    pub fn page(&self, id: i64) -> Option<Option<Arc<Tagged>>> {
        let pages = self.0.pages.load();
        pages
            .live
            .then(|| pages.sales.get(&id).map(|(_, page)| Arc::clone(page)))
    }

    /// The sale list's page while live.
    pub fn list(&self) -> Option<Arc<Tagged>> {
        let pages = self.0.pages.load();
        pages.live.then(|| Arc::clone(&pages.list))
    }

    /// Applies one message of the feed: a snapshot replaces every page and makes them live,
    /// anything else updates the sales it carries.
    pub fn apply(&self, update: pb::SalesUpdate) -> Result<(), ApiError> {
        let current = self.0.pages.load_full();
        let mut sales = if update.snapshot {
            BTreeMap::new()
        } else {
            current.sales.clone()
        };
        let mut changed = Vec::with_capacity(update.sales.len());
        for sale in update.sales {
            let page = Arc::new(Tagged::json(&Sale::from(sale.clone()))?);
            changed.push((sale.id, Arc::clone(&page)));
            sales.insert(sale.id, (sale, page));
        }
        self.store(sales, update.snapshot || current.live)?;
        let mut streams = self.0.streams.lock();
        streams.retain(|_, stream| stream.receiver_count() > 0);
        for (id, page) in changed {
            if let Some(stream) = streams.get(&id) {
                stream.send_if_modified(|shown| {
                    let fresh = shown.body() != page.body();
                    if fresh {
                        *shown = page;
                    }
                    fresh
                });
            }
        }
        Ok(())
    }

    /// Keeps a sale this gateway learned from the inventory otherwise (it created it, or read it
    /// while not live), unless the feed already brought it (which is as new or newer).
    pub fn remember(&self, sale: &pb::Sale) -> Result<(), ApiError> {
        let current = self.0.pages.load_full();
        if current.sales.contains_key(&sale.id) {
            return Ok(());
        }
        let mut sales = current.sales.clone();
        let page = Arc::new(Tagged::json(&Sale::from(sale.clone()))?);
        sales.insert(sale.id, (sale.clone(), page));
        self.store(sales, current.live)
    }

    /// The stream was interrupted: stop trusting the pages until the next snapshot.
    pub fn suspend(&self) {
        let current = self.0.pages.load_full();
        self.0.pages.store(Arc::new(Pages {
            live: false,
            sales: current.sales.clone(),
            list: Arc::clone(&current.list),
        }));
    }

    /// A receiver of the sale's latest page, for its live stream; `None` when this gateway
    /// does not know the sale.
    pub fn subscribe(&self, id: i64) -> Option<watch::Receiver<Arc<Tagged>>> {
        let pages = self.0.pages.load();
        let (_, page) = pages.sales.get(&id)?;
        let mut streams = self.0.streams.lock();
        let stream = streams
            .entry(id)
            .or_insert_with(|| watch::Sender::new(Arc::clone(page)));
        Some(stream.subscribe())
    }

    /// Ends every live stream (the gateway is shutting down: an open stream would hold the
    /// drain until its grace period ran out). A stream opened after this ends at the next
    /// close, or with its connection.
    pub fn close_streams(&self) {
        self.0.streams.lock().clear();
    }

    /// How many live streams are open, over every sale.
    pub fn subscribers(&self) -> usize {
        self.0
            .streams
            .lock()
            .values()
            .map(watch::Sender::receiver_count)
            .sum()
    }

    fn store(
        &self,
        sales: BTreeMap<i64, (pb::Sale, Arc<Tagged>)>,
        live: bool,
    ) -> Result<(), ApiError> {
        let all: Vec<Sale> = sales
            .values()
            .map(|(sale, _)| Sale::from(sale.clone()))
            .collect();
        let list = Arc::new(Tagged::json(&all)?);
        self.0.pages.store(Arc::new(Pages { live, sales, list }));
        Ok(())
    }
}

/// The live stream of a sale for one subscriber: a `sale` event with its page at once, then one
/// per change (the latest page, however many changes a slow reader missed), and a keep-alive
/// comment when nothing changed for 15 s.
pub fn event_stream(watcher: watch::Receiver<Arc<Tagged>>) -> Response {
    let pages = futures::stream::unfold((watcher, true), |(mut watcher, first)| async move {
        if !first {
            watcher.changed().await.ok()?;
        }
        let page = Arc::clone(&watcher.borrow_and_update());
        Some((page, (watcher, false)))
    });
    let events = pages.map(|page| {
        Ok::<_, Infallible>(
            Event::default()
                .event("sale")
                .data(String::from_utf8_lossy(page.body())),
        )
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Follows the inventory's sales feed into `live` (and teaches `sales` every sale's metadata,
/// so the buy path never looks one up) forever; the caller aborts the task.
pub async fn follow(mut inventory: InventoryClient<Balanced>, live: LiveSales, sales: SaleCache) {
    let mut failing = false;
    loop {
        match inventory.watch_sales(WatchSalesRequest {}).await {
            Ok(response) => {
                failing = false;
                tracing::info!("following the sales feed");
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(update)) => {
                            for sale in &update.sales {
                                sales.remember(sale).await;
                            }
                            if let Err(e) = live.apply(update) {
                                tracing::warn!(error = ?e, "cannot render a sale page");
                            }
                        }
                        Ok(None) => {
                            tracing::info!("sales feed ended; watching again");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(%status, "sales feed failed; watching again");
                            break;
                        }
                    }
                }
            }
            Err(status) if !failing => {
                failing = true;
                tracing::warn!(%status, "cannot watch the sales feed; reads ask the inventory");
            }
            Err(_) => {}
        }
        live.suspend();
        tokio::time::sleep(REWATCH_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale(id: i64, remaining: i64) -> pb::Sale {
        pb::Sale {
            id,
            name: format!("sale {id}"),
            stock: 10,
            remaining,
            ..Default::default()
        }
    }

    fn remaining(page: &Tagged) -> i64 {
        let sale: serde_json::Value = serde_json::from_slice(page.body()).unwrap();
        sale["remaining"].as_i64().unwrap()
    }

    #[test]
    fn pages_are_trusted_from_a_snapshot_until_suspended() {
        let live = LiveSales::new();
        assert!(
            live.page(1).is_none(),
            "nothing is trusted before a snapshot"
        );
        live.apply(pb::SalesUpdate {
            snapshot: false,
            sales: vec![sale(1, 10)],
        })
        .unwrap();
        assert!(
            !live.is_live(),
            "a change alone does not make the pages live"
        );
        live.apply(pb::SalesUpdate {
            snapshot: true,
            sales: vec![sale(1, 9), sale(2, 10)],
        })
        .unwrap();
        assert_eq!(remaining(&live.page(1).unwrap().unwrap()), 9);
        assert!(live.page(3).unwrap().is_none(), "unknown while live: 404");
        live.apply(pb::SalesUpdate {
            snapshot: false,
            sales: vec![sale(2, 4)],
        })
        .unwrap();
        assert_eq!(remaining(&live.page(2).unwrap().unwrap()), 4);
        let list: Vec<serde_json::Value> =
            serde_json::from_slice(live.list().unwrap().body()).unwrap();
        assert_eq!(
            list.iter()
                .map(|s| s["remaining"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            vec![9, 4]
        );
        live.suspend();
        assert!(live.page(1).is_none() && live.list().is_none());
    }

    #[test]
    fn a_snapshot_drops_sales_it_does_not_hold_and_remember_never_overrides_the_feed() {
        let live = LiveSales::new();
        live.apply(pb::SalesUpdate {
            snapshot: true,
            sales: vec![sale(1, 3)],
        })
        .unwrap();
        live.remember(&sale(1, 10)).unwrap();
        assert_eq!(remaining(&live.page(1).unwrap().unwrap()), 3);
        live.remember(&sale(2, 10)).unwrap();
        assert_eq!(remaining(&live.page(2).unwrap().unwrap()), 10);
        live.apply(pb::SalesUpdate {
            snapshot: true,
            sales: vec![sale(2, 8)],
        })
        .unwrap();
        assert!(live.page(1).unwrap().is_none());
    }

    #[tokio::test]
    async fn watchers_see_each_change_once_and_only_the_latest_when_slow() {
        let live = LiveSales::new();
        live.apply(pb::SalesUpdate {
            snapshot: true,
            sales: vec![sale(1, 10), sale(2, 10)],
        })
        .unwrap();
        assert!(live.subscribe(3).is_none());
        let mut watcher = live.subscribe(1).unwrap();
        assert_eq!(remaining(&watcher.borrow_and_update()), 10);
        assert_eq!(live.subscribers(), 1);
        // Another sale changing, or a snapshot repeating the same page, is not an event.
        live.apply(pb::SalesUpdate {
            snapshot: false,
            sales: vec![sale(2, 5)],
        })
        .unwrap();
        live.apply(pb::SalesUpdate {
            snapshot: true,
            sales: vec![sale(1, 10), sale(2, 5)],
        })
        .unwrap();
        assert!(!watcher.has_changed().unwrap());
        for left in [9, 8, 7] {
            live.apply(pb::SalesUpdate {
                snapshot: false,
                sales: vec![sale(1, left)],
            })
            .unwrap();
        }
        watcher.changed().await.unwrap();
        assert_eq!(remaining(&watcher.borrow_and_update()), 7);
        assert!(!watcher.has_changed().unwrap());
        let mut other = live.subscribe(2).unwrap();
        live.close_streams();
        assert!(other.changed().await.is_err(), "closed: the stream ends");
        assert!(watcher.changed().await.is_err());
        drop(watcher);
        live.apply(pb::SalesUpdate {
            snapshot: false,
            sales: vec![sale(1, 6)],
        })
        .unwrap();
        assert_eq!(
            live.subscribers(),
            0,
            "a closed stream's channel is dropped"
        );
    }
}
