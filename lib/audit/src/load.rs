//! Reads a [`Snapshot`] from each service's own database (the same SQLite
//! files or PostgreSQL tables the services use, migrations included).

use anyhow::Context;
use ordermesh_storage::DatabaseSettings;
use sqlx::Row;

use crate::{Lines, OrderRow, PaymentRow, ProductRow, ReservationRow, Snapshot};

pub async fn load(settings: &DatabaseSettings) -> anyhow::Result<Snapshot> {
    let orders = ordermesh_order::open_database(settings).await?;
    let payments = ordermesh_payment::open_database(settings).await?;
    let inventory = ordermesh_inventory::open_database(settings).await?;
    let orders_db = orders.pool();
    let payments_db = payments.pool();
    let inventory_db = inventory.pool();

    let mut order_lines = lines(
        orders_db,
        "SELECT order_id, product_id, quantity FROM order_items",
    )
    .await
    .context("reading order lines")?;
    let orders = sqlx::query("SELECT order_id, status, step, total_minor_units FROM order_orders")
        .fetch_all(orders_db)
        .await
        .context("reading orders")?
        .into_iter()
        .map(|row| {
            let order_id: String = row.get(0);
            OrderRow {
                lines: order_lines.remove(&order_id).unwrap_or_default(),
                order_id,
                status: row.get(1),
                step: row.get(2),
                total_minor_units: row.get(3),
            }
        })
        .collect();

    let payments = sqlx::query("SELECT order_id, status, amount_minor_units FROM payment_payments")
        .fetch_all(payments_db)
        .await
        .context("reading payments")?
        .into_iter()
        .map(|row| PaymentRow {
            order_id: row.get(0),
            status: row.get(1),
            amount_minor_units: row.get(2),
        })
        .collect();

    let mut reservation_lines = lines(
        inventory_db,
        "SELECT reservation_id, product_id, quantity FROM inventory_reservation_items",
    )
    .await
    .context("reading reservation lines")?;
    let reservations = sqlx::query("SELECT reservation_id, status FROM inventory_reservations")
        .fetch_all(inventory_db)
        .await
        .context("reading reservations")?
        .into_iter()
        .map(|row| {
            let reservation_id: String = row.get(0);
            ReservationRow {
                lines: reservation_lines
                    .remove(&reservation_id)
                    .unwrap_or_default(),
                reservation_id,
                status: row.get(1),
            }
        })
        .collect();

    let products = sqlx::query("SELECT product_id, available, stock_total FROM inventory_products")
        .fetch_all(inventory_db)
        .await
        .context("reading products")?
        .into_iter()
        .map(|row| ProductRow {
            product_id: row.get(0),
            available: row.get(1),
            stock_total: row.get(2),
        })
        .collect();

    Ok(Snapshot {
        orders,
        payments,
        reservations,
        products,
    })
}

/// (owner id, product id, quantity) rows, grouped by owner.
async fn lines(
    pool: &sqlx::AnyPool,
    sql: &str,
) -> anyhow::Result<std::collections::HashMap<String, Lines>> {
    let mut grouped: std::collections::HashMap<String, Lines> = Default::default();
    for row in sqlx::query(sql).fetch_all(pool).await? {
        let owner: String = row.get(0);
        let product: String = row.get(1);
        let quantity: i64 = row.get(2);
        *grouped
            .entry(owner)
            .or_default()
            .entry(product)
            .or_default() += quantity;
    }
    Ok(grouped)
}
