//! Operator commands against running services: `flashsale inventory reconcile` asks the
//! inventory service to compare its stock backend with the database and repair drift
//! (`Reconcile` RPC, see `flashsale_inventory::drift`), then prints what it found per sale.

use std::{fmt::Write as _, process::ExitCode};

use anyhow::Context as _;
use flashsale_proto::inventory::{ReconcileReply, ReconcileRequest, SaleReconcile};

use crate::{cli::ReconcileArgs, config::Config, startup::inventory_client};

/// Exit code when drift was found in a dry run, or conflicts were left unrepaired.
pub const DRIFT_FOUND: u8 = 2;

/// Runs `flashsale inventory reconcile` and prints the report.
pub async fn reconcile(config: &Config, args: &ReconcileArgs) -> anyhow::Result<ExitCode> {
    let addr = args.addr.as_deref().unwrap_or(&config.services.inventory);
    let mut client = inventory_client(addr)?;
    let reply = client
        .reconcile(ReconcileRequest {
            sale_id: args.sale,
            dry_run: args.dry_run,
        })
        .await
        .with_context(|| format!("reconcile on the inventory service at {addr}"))?
        .into_inner();
    print!("{}", render(&reply));
    let left = reply
        .sales
        .iter()
        .any(|s| s.conflicts > 0 || (reply.dry_run && s.drifted));
    Ok(if left {
        ExitCode::from(DRIFT_FOUND)
    } else {
        ExitCode::SUCCESS
    })
}

/// The report, one line per sale.
pub fn render(reply: &ReconcileReply) -> String {
    let mut out = String::new();
    if reply.dry_run {
        out.push_str("dry run: nothing was changed; the changes below would be made\n");
    }
    if reply.sales.is_empty() {
        out.push_str("no sales\n");
    }
    for sale in &reply.sales {
        let _ = writeln!(out, "{}", render_sale(sale));
    }
    out
}

fn render_sale(s: &SaleReconcile) -> String {
    let id = s.sale_id;
    if !s.tracked {
        return format!("sale {id}: not tracked by the stock backend (being rebuilt); skipped");
    }
    let in_flight = if s.holds_in_flight > 0 {
        format!(
            "; {} in flight (younger than the grace period)",
            s.holds_in_flight
        )
    } else {
        String::new()
    };
    if !s.drifted {
        return format!(
            "sale {id}: clean, remaining {}{in_flight}",
            s.remaining_before
        );
    }
    let users = if s.users_fixed.is_empty() {
        "none".to_owned()
    } else {
        s.users_fixed
            .iter()
            .map(|f| format!("user {} {} -> {}", f.user_id, f.before, f.after))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "sale {id}: DRIFT remaining {} -> {}; holds adopted {}, released {}, voided {}; \
         held units fixed: {users}; conflicts {}{in_flight}",
        s.remaining_before,
        s.remaining_after,
        s.holds_adopted,
        s.holds_released,
        s.holds_voided,
        s.conflicts,
    )
}

#[cfg(test)]
mod tests {
    use flashsale_proto::inventory::HeldFix;

    use super::*;

    #[test]
    fn the_report_names_every_change() {
        let reply = ReconcileReply {
            dry_run: true,
            sales: vec![
                SaleReconcile {
                    sale_id: 1,
                    tracked: true,
                    remaining_before: 17,
                    remaining_after: 14,
                    holds_adopted: 1,
                    holds_released: 2,
                    holds_voided: 3,
                    users_fixed: vec![HeldFix {
                        user_id: 9,
                        before: 2,
                        after: 0,
                    }],
                    holds_in_flight: 4,
                    conflicts: 0,
                    drifted: true,
                },
                SaleReconcile {
                    sale_id: 2,
                    tracked: true,
                    remaining_before: 5,
                    remaining_after: 5,
                    ..SaleReconcile::default()
                },
                SaleReconcile {
                    sale_id: 3,
                    ..SaleReconcile::default()
                },
            ],
        };
        assert_eq!(
            render(&reply),
            "dry run: nothing was changed; the changes below would be made\n\
             sale 1: DRIFT remaining 17 -> 14; holds adopted 1, released 2, voided 3; \
             held units fixed: user 9 2 -> 0; conflicts 0; 4 in flight (younger than the grace \
             period)\n\
             sale 2: clean, remaining 5\n\
             sale 3: not tracked by the stock backend (being rebuilt); skipped\n"
        );
    }
}
