//! The inventory service over the stock backends and the real embedded database: buys for
//! sale ids it does not know never reach Redis (watched with MONITOR), and an inventory that
//! restarts while gateways run pauses the sales it does not track until the grace period is
//! over, then counts every journaled order.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use flashsale_order::held::JournalHeld;
use std::{sync::Arc, time::Duration};

use common::database;
use flashsale_inventory::{
    catalog::{Catalog, SqlCatalog},
    sale::NewSale,
    stock::{RedisStock, StockStore},
    InventoryService,
};
use flashsale_proto::inventory::{
    inventory_server::Inventory, GetSaleRequest, ReserveOutcome as PbOutcome,
    ReserveRequest as PbReserve,
};
use flashsale_redis::testing::TestRedis;
use flashsale_storage::now_ms;
use flashsale_testkit::eventually;
use futures::StreamExt;
use redis::AsyncCommands;

fn open_sale(stock: i64) -> NewSale {
    let now = now_ms();
    NewSale {
        name: "item".into(),
        price_cents: 100,
        stock,
        per_user_limit: 5,
        starts_at_ms: now - 1000,
        ends_at_ms: now + 3_600_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sale_ids_never_reach_redis() {
    let Some(test) = TestRedis::start().await else {
        return;
    };
    let (_dir, pool) = database().await;
    let catalog = Arc::new(SqlCatalog::new(pool.clone(), JournalHeld::shared(pool)));
    let known = catalog.create(&open_sale(10)).await.unwrap();
    let stock: Arc<dyn StockStore> = Arc::new(RedisStock::new(test.redis.clone()));
    let service = InventoryService::open(catalog, stock).await.unwrap();

    // Watch every command Redis runs from here on.
    let client = redis::Client::open(test.config.url.as_str()).unwrap();
    let mut lines = client
        .get_async_monitor()
        .await
        .unwrap()
        .into_on_message::<String>();
    // MONITOR is on once it shows a command sent after it.
    let start = test.redis.key("start");
    let _: Option<String> = test.redis.conn().get(&start).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next().await {
            if line.contains(&start) {
                break;
            }
        }
    })
    .await
    .expect("the monitor never started");

    let reserve = |sale_id: i64, n: u128| PbReserve {
        order_id: uuid::Uuid::from_u128(0xfeed_0000 + n).to_string(),
        sale_id,
        user_id: 1,
        quantity: 1,
    };
    // Control: a known sale does reach Redis (so the monitor sees our commands).
    let ok = service
        .reserve(tonic::Request::new(reserve(known.id, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.outcome, i32::from(PbOutcome::Reserved));
    // Unknown ids: refused, and not a single command about them.
    for (n, unknown) in [987_654_321_i64, 987_654_322, -5, 0]
        .into_iter()
        .enumerate()
    {
        let r = service
            .reserve(tonic::Request::new(reserve(unknown, 1 + n as u128)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.outcome, i32::from(PbOutcome::SaleNotFound));
        let g = service
            .get_sale(tonic::Request::new(GetSaleRequest { id: unknown }))
            .await
            .unwrap()
            .into_inner();
        assert!(g.sale.is_none());
    }
    // A sentinel marks the end of what we sent.
    let sentinel = test.redis.key("sentinel");
    let _: Option<String> = test.redis.conn().get(&sentinel).await.unwrap();
    let mut ours = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next().await {
            if line.contains(&sentinel) {
                break;
            }
            if line.contains(test.redis.prefix()) {
                ours.push(line);
            }
        }
    })
    .await
    .expect("the monitor never showed the sentinel");
    assert!(
        ours.iter()
            .any(|l| l.contains(&format!("stock:sale:{}", known.id))),
        "the known sale's reserve is not in the monitor: {ours:?}"
    );
    for unknown in ["987654321", "987654322", "stock:sale:-5", "stock:sale:0\""] {
        assert!(
            !ours.iter().any(|l| l.contains(unknown)),
            "an unknown sale reached Redis: {ours:?}"
        );
    }
    test.cleanup().await;
}

/// Opening after a restart: a sale the backend does not track is paused for the grace period,
/// then rebuilt counting the orders the database (here: the queue journal) holds.
async fn a_restarted_inventory_pauses_untracked_sales(stock: Arc<dyn StockStore>) {
    let (_dir, pool) = database().await;
    let catalog = Arc::new(SqlCatalog::new(
        pool.clone(),
        JournalHeld::shared(pool.clone()),
    ));
    let sale = catalog.create(&open_sale(2)).await.unwrap();
    // An order the previous inventory process reserved, already in the journal.
    sqlx::query(
        "INSERT INTO order_queue (order_id, user_id, sale_id, quantity, price_cents, idempotency_key, accepted_at_ms)
         VALUES (?, 1, ?, 1, 100, 'k', ?)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(sale.id)
    .bind(now_ms())
    .execute(&pool)
    .await
    .unwrap();
    // A pause of 2 s: the first reserve below must land inside it, however loaded the machine.
    let service = InventoryService::open_paused(catalog, stock, Duration::from_secs(2))
        .await
        .unwrap();
    let reserve = |user: i64| PbReserve {
        order_id: uuid::Uuid::new_v4().to_string(),
        sale_id: sale.id,
        user_id: user,
        quantity: 1,
    };
    let paused = service
        .reserve(tonic::Request::new(reserve(2)))
        .await
        .unwrap_err();
    assert_eq!(paused.code(), tonic::Code::Unavailable);
    let reply = eventually(
        "the sale to be rebuilt",
        Duration::from_secs(15),
        || async {
            match service.reserve(tonic::Request::new(reserve(2))).await {
                Ok(reply) => Ok(reply.into_inner()),
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unavailable);
                    Err(status)
                }
            }
        },
    )
    .await;
    // One of the two units was already taken by the journaled order.
    assert_eq!(reply.outcome, i32::from(PbOutcome::Reserved));
    assert_eq!(reply.remaining, 0);
    let sold_out = service
        .reserve(tonic::Request::new(reserve(3)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sold_out.outcome, i32::from(PbOutcome::SoldOut));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_inventory_pauses_untracked_sales_in_memory() {
    a_restarted_inventory_pauses_untracked_sales(Arc::new(
        flashsale_inventory::stock::MemoryStock::new(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_inventory_pauses_untracked_sales_in_redis() {
    let Some(test) = TestRedis::start().await else {
        return;
    };
    a_restarted_inventory_pauses_untracked_sales(Arc::new(RedisStock::new(test.redis.clone())))
        .await;
    test.cleanup().await;
}

/// `ReserveMany` answers every item as `Reserve` would, in the items' order: malformed items
/// and unknown sales are answered without the backend, the rest decided together (a later
/// item sees what an earlier one took).
async fn reserve_many_answers_each_item_as_reserve_would(stock: Arc<dyn StockStore>) {
    use flashsale_proto::inventory::{
        reserve_result::Result as Item, ReserveItem, ReserveManyRequest,
    };
    let (_dir, pool) = database().await;
    let catalog = Arc::new(SqlCatalog::new(pool.clone(), JournalHeld::shared(pool)));
    let sale = catalog.create(&open_sale(3)).await.unwrap();
    let service = InventoryService::open(catalog, stock).await.unwrap();
    let item = |order: &str, sale_id: i64, user_id: i64, quantity: i64| ReserveItem {
        request: Some(PbReserve {
            order_id: order.to_owned(),
            sale_id,
            user_id,
            quantity,
        }),
        traceparent: "not a traceparent".to_owned(),
    };
    let id = |n: u128| uuid::Uuid::from_u128(n).to_string();
    let items = vec![
        item(&id(1), sale.id, 1, 1),
        item(&id(2), sale.id, 2, 0),
        item("not-a-uuid", sale.id, 2, 1),
        item(&id(3), sale.id + 1000, 2, 1),
        ReserveItem::default(),
        item(&id(4), sale.id, 2, 2),
        item(&id(1), sale.id, 1, 1),
        item(&id(5), sale.id, 3, 1),
    ];
    let results = service
        .reserve_many(tonic::Request::new(ReserveManyRequest { items }))
        .await
        .unwrap()
        .into_inner()
        .results;
    let answers: Vec<Result<(PbOutcome, i64), tonic::Code>> = results
        .into_iter()
        .map(|r| match r.result {
            Some(Item::Reply(reply)) => Ok((reply.outcome(), reply.remaining)),
            Some(Item::Error(e)) => Err(tonic::Code::from(e.code)),
            None => panic!("an empty result"),
        })
        .collect();
    assert_eq!(
        answers,
        vec![
            Ok((PbOutcome::Reserved, 2)),
            Err(tonic::Code::InvalidArgument),
            Err(tonic::Code::InvalidArgument),
            Ok((PbOutcome::SaleNotFound, 0)),
            Err(tonic::Code::InvalidArgument),
            Ok((PbOutcome::Reserved, 0)),
            Ok((PbOutcome::AlreadyReserved, 0)),
            Ok((PbOutcome::SoldOut, 0)),
        ]
    );
    let reply = service
        .get_sale(tonic::Request::new(GetSaleRequest { id: sale.id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.sale.unwrap().remaining, 0);

    // Too many items for one call: refused whole, nothing decided.
    let too_many = (0..=flashsale_inventory::service::MAX_BATCH_ITEMS)
        .map(|n| item(&id(100 + n as u128), sale.id, 9, 1))
        .collect();
    let refused = service
        .reserve_many(tonic::Request::new(ReserveManyRequest { items: too_many }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_many_answers_each_item_in_memory() {
    reserve_many_answers_each_item_as_reserve_would(Arc::new(
        flashsale_inventory::stock::MemoryStock::new(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_many_answers_each_item_in_redis() {
    let Some(test) = TestRedis::start().await else {
        return;
    };
    reserve_many_answers_each_item_as_reserve_would(Arc::new(RedisStock::new(test.redis.clone())))
        .await;
    test.cleanup().await;
}
