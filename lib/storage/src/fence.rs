//! Fencing numbers of saga steps, kept by the services the saga calls
//! (inventory, payment). Each new holder of an order's saga lease gets a
//! larger number and sends it with every step; a service refuses a step
//! with a smaller number than it has seen for that order, so a holder that
//! lost its lease (paused, partitioned, its clock wrong) can no longer act.
//! A step without a number (a caller from before fencing) is accepted only
//! for an order that never sent one.
//!
//! The check runs as the first statement of the step's own transaction: on
//! PostgreSQL the fence row's lock orders two holders' steps of one order,
//! on SQLite the write lock does.

use crate::{Param, Tx};

/// The metadata key the order service sends the fencing number under.
pub const METADATA_KEY: &str = "x-ordermesh-fence";

/// A step refused for its fencing number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stale {
    /// What the step carried (None: no number).
    pub sent: Option<i64>,
}

/// Records `fence` for `key` in `table` (columns `key_column`, `fence`)
/// unless a larger one is there. `Err(Stale)` inside `Ok` when refused.
pub async fn observe(
    tx: &mut Tx,
    table: &'static str,
    key_column: &'static str,
    key: &str,
    fence: Option<i64>,
) -> Result<Result<(), Stale>, sqlx::Error> {
    match fence {
        Some(fence) => {
            let recorded = tx
                .execute(
                    &format!(
                        "INSERT INTO {table} ({key_column}, fence) VALUES ($1, $2) \
                         ON CONFLICT ({key_column}) DO UPDATE SET fence = excluded.fence \
                         WHERE {table}.fence <= excluded.fence"
                    ),
                    &[Param::Text(key), Param::Int(fence)],
                )
                .await?;
            Ok(if recorded == 1 {
                Ok(())
            } else {
                Err(Stale { sent: Some(fence) })
            })
        }
        None => {
            let seen = tx
                .query_optional(
                    &format!("SELECT fence FROM {table} WHERE {key_column} = $1"),
                    &[Param::Text(key)],
                    |row| row.int("fence"),
                )
                .await?;
            Ok(match seen {
                None => Ok(()),
                Some(_) => Err(Stale { sent: None }),
            })
        }
    }
}

/// Reads the fencing number a request carried: None when absent, an error
/// message when it is not a non-negative integer.
pub fn parse(value: Option<&str>) -> Result<Option<i64>, String> {
    match value {
        None => Ok(None),
        Some(text) => match text.trim().parse::<i64>() {
            Ok(fence) if fence >= 0 => Ok(Some(fence)),
            _ => Err(format!(
                "metadata {METADATA_KEY} must be a non-negative integer, got {:?}",
                text.chars().take(32).collect::<String>()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_non_negative_integers() {
        assert_eq!(parse(None), Ok(None));
        assert_eq!(parse(Some("7")), Ok(Some(7)));
        assert!(parse(Some("-1")).is_err());
        assert!(parse(Some("x")).is_err());
    }
}
