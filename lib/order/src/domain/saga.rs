//! The order saga as a state machine: given where an order stands and what
//! the last step's call returned, where it goes next. The runner does the
//! calls and stores each new state before making the next call.
//!
//! Forward: reserve → charge → commit → done (CONFIRMED).
//! When a step fails for good, the order turns FAILED at once and the saga
//! moves to `compensate`, which releases stock and/or voids the payment (as
//! its flags say) until both are acknowledged. A cancel of a CONFIRMED order
//! turns it CANCELLED and compensates both. Calls whose outcome is unknown
//! (the peer is down, the deadline passed) are retried later with backoff,
//! except before anything was taken, where failing fast serves the customer
//! better and compensation covers the unknown.

use std::time::Duration;

use super::order::{FailureReason, OrderStatus, Step};

/// Everything the saga needs to decide its next move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SagaState {
    pub status: OrderStatus,
    pub step: Step,
    pub failure_reason: Option<FailureReason>,
    /// Stock may be held for this order and must be released.
    pub compensate_stock: bool,
    /// A charge may exist for this order and must be refunded or voided.
    pub compensate_payment: bool,
    /// Failed tries of the current step, for backoff.
    pub attempts: u32,
}

impl SagaState {
    /// A freshly stored order, about to reserve stock.
    pub fn new_order() -> Self {
        Self {
            status: OrderStatus::Pending,
            step: Step::Reserve,
            failure_reason: None,
            compensate_stock: false,
            compensate_payment: false,
            attempts: 0,
        }
    }
}

/// What one step's call came back with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Reserved,
    /// Inventory said no; `maybe_reserved` when stock may be held anyway
    /// (an unknown outcome), so it must be released.
    ReserveFailed {
        reason: FailureReason,
        maybe_reserved: bool,
    },
    Charged,
    /// Payment declined or failed; `maybe_charged` when a charge may exist
    /// anyway (an unknown outcome), so it must be voided.
    ChargeFailed {
        reason: FailureReason,
        maybe_charged: bool,
    },
    Committed,
    /// The reservation expired before it could be committed.
    CommitRefused,
    /// Which of the compensating calls were acknowledged this round.
    Compensated {
        stock_released: bool,
        payment_refunded: bool,
    },
    /// The call's outcome is unknown and the step is safe to repeat.
    RetryLater,
    /// The peer refused the step: a newer holder of the order's lease was
    /// seen. The runner stops driving without storing anything.
    Fenced,
}

/// The next state, and when to try again if the saga must pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub state: SagaState,
    pub retry_in: Option<Duration>,
}

const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Exponential backoff after `attempts` failed tries, capped.
pub fn backoff(attempts: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(attempts.min(16)))
        .min(MAX_RETRY)
}

/// Where `state` goes after `outcome`.
pub fn advance(state: SagaState, outcome: Outcome) -> Transition {
    let progressed = |state: SagaState| Transition {
        state: SagaState {
            attempts: 0,
            ..state
        },
        retry_in: None,
    };
    let fail = |reason, compensate_stock, compensate_payment| {
        let step = if compensate_stock || compensate_payment {
            Step::Compensate
        } else {
            Step::Done
        };
        progressed(SagaState {
            status: OrderStatus::Failed,
            step,
            failure_reason: Some(reason),
            compensate_stock,
            compensate_payment,
            attempts: 0,
        })
    };
    match (state.step, outcome) {
        (Step::Reserve, Outcome::Reserved) => progressed(SagaState {
            step: Step::Charge,
            compensate_stock: true,
            ..state
        }),
        (
            Step::Reserve,
            Outcome::ReserveFailed {
                reason,
                maybe_reserved,
            },
        ) => fail(reason, maybe_reserved, false),
        (Step::Charge, Outcome::Charged) => progressed(SagaState {
            step: Step::Commit,
            ..state
        }),
        (
            Step::Charge,
            Outcome::ChargeFailed {
                reason,
                maybe_charged,
            },
        ) => fail(reason, true, maybe_charged),
        (Step::Commit, Outcome::Committed) => progressed(SagaState {
            status: OrderStatus::Confirmed,
            step: Step::Done,
            compensate_stock: false,
            ..state
        }),
        (Step::Commit, Outcome::CommitRefused) => {
            fail(FailureReason::ReservationExpired, true, true)
        }
        (
            Step::Compensate,
            Outcome::Compensated {
                stock_released,
                payment_refunded,
            },
        ) => {
            let remaining = SagaState {
                compensate_stock: state.compensate_stock && !stock_released,
                compensate_payment: state.compensate_payment && !payment_refunded,
                ..state
            };
            if remaining.compensate_stock || remaining.compensate_payment {
                retry(remaining)
            } else {
                progressed(SagaState {
                    step: Step::Done,
                    ..remaining
                })
            }
        }
        // RetryLater, or an outcome that does not belong to this step (which
        // the runner never produces): keep the state and try again later.
        _ => retry(state),
    }
}

/// Whether going from `before` to `after` may go unstored while the drive
/// goes on: a forward step that changes neither the status nor anything
/// compensation needs to know. Each forward step is idempotent (keyed by
/// the order), so a drive that resumes the order from an older stored step
/// repeats it and gets the same answer. Every other change is stored first.
pub fn needs_no_record(before: &SagaState, after: &SagaState) -> bool {
    let forward = matches!(
        (before.step, after.step),
        (Step::Reserve, Step::Charge) | (Step::Charge, Step::Commit)
    );
    forward && before.status == after.status && before.status == OrderStatus::Pending
}

/// [`advance`] for a drive that resumed the order from the store. An
/// earlier drive may have gone past the stored step without storing it
/// ([`needs_no_record`]): if the resumed order fails at `reserve`, a
/// charge may exist all the same, so it is voided too (voiding an order
/// that has no charge records the void, which is harmless).
pub fn advance_resumed(state: SagaState, outcome: Outcome) -> Transition {
    let mut transition = advance(state, outcome);
    if state.step == Step::Reserve && transition.state.status == OrderStatus::Failed {
        transition.state.compensate_payment = true;
        transition.state.step = Step::Compensate;
    }
    transition
}

fn retry(state: SagaState) -> Transition {
    let attempts = state.attempts.saturating_add(1);
    Transition {
        state: SagaState { attempts, ..state },
        retry_in: Some(backoff(attempts - 1)),
    }
}

/// Why an order cannot be cancelled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CancelError {
    #[error("the order is still being processed; cancel it once it is CONFIRMED")]
    StillPending,
    #[error("the order has FAILED; there is nothing to cancel")]
    AlreadyFailed,
}

/// The state after a customer cancels: only a CONFIRMED order can be
/// cancelled (refund and restock follow); cancelling a CANCELLED order again
/// changes nothing.
pub fn cancel(state: SagaState) -> Result<SagaState, CancelError> {
    match state.status {
        OrderStatus::Cancelled => Ok(state),
        OrderStatus::Confirmed => Ok(SagaState {
            status: OrderStatus::Cancelled,
            step: Step::Compensate,
            failure_reason: None,
            compensate_stock: true,
            compensate_payment: true,
            attempts: 0,
        }),
        OrderStatus::Pending => Err(CancelError::StillPending),
        OrderStatus::Failed => Err(CancelError::AlreadyFailed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(outcomes: &[Outcome]) -> SagaState {
        outcomes
            .iter()
            .fold(SagaState::new_order(), |state, outcome| {
                advance(state, *outcome).state
            })
    }

    #[test]
    fn happy_path_confirms() {
        let state = run(&[Outcome::Reserved, Outcome::Charged, Outcome::Committed]);
        assert_eq!(state.status, OrderStatus::Confirmed);
        assert_eq!(state.step, Step::Done);
        assert!(!state.compensate_stock && !state.compensate_payment);
    }

    #[test]
    fn out_of_stock_fails_with_nothing_to_undo() {
        let state = run(&[Outcome::ReserveFailed {
            reason: FailureReason::OutOfStock,
            maybe_reserved: false,
        }]);
        assert_eq!(state.status, OrderStatus::Failed);
        assert_eq!(state.failure_reason, Some(FailureReason::OutOfStock));
        assert_eq!(state.step, Step::Done);
    }

    #[test]
    fn unknown_reserve_outcome_fails_and_releases() {
        let state = run(&[Outcome::ReserveFailed {
            reason: FailureReason::InventoryUnavailable,
            maybe_reserved: true,
        }]);
        assert_eq!(state.status, OrderStatus::Failed);
        assert_eq!(state.step, Step::Compensate);
        assert!(state.compensate_stock && !state.compensate_payment);
    }

    #[test]
    fn decline_fails_at_once_and_releases_stock() {
        let state = run(&[
            Outcome::Reserved,
            Outcome::ChargeFailed {
                reason: FailureReason::InsufficientFunds,
                maybe_charged: false,
            },
        ]);
        assert_eq!(state.status, OrderStatus::Failed);
        assert_eq!(state.failure_reason, Some(FailureReason::InsufficientFunds));
        assert_eq!(state.step, Step::Compensate);
        assert!(state.compensate_stock && !state.compensate_payment);
        let done = advance(
            state,
            Outcome::Compensated {
                stock_released: true,
                payment_refunded: false,
            },
        );
        assert_eq!(done.state.step, Step::Done);
        assert_eq!(done.retry_in, None);
        assert_eq!(done.state.status, OrderStatus::Failed);
    }

    #[test]
    fn unknown_charge_voids_the_payment_too() {
        let state = run(&[
            Outcome::Reserved,
            Outcome::ChargeFailed {
                reason: FailureReason::PaymentUnavailable,
                maybe_charged: true,
            },
        ]);
        assert!(state.compensate_stock && state.compensate_payment);
        // Inventory answered, payment is still down: keep the payment flag.
        let partly = advance(
            state,
            Outcome::Compensated {
                stock_released: true,
                payment_refunded: false,
            },
        );
        assert_eq!(partly.state.step, Step::Compensate);
        assert!(!partly.state.compensate_stock && partly.state.compensate_payment);
        assert!(partly.retry_in.is_some());
    }

    #[test]
    fn expired_reservation_refunds() {
        let state = run(&[Outcome::Reserved, Outcome::Charged, Outcome::CommitRefused]);
        assert_eq!(state.status, OrderStatus::Failed);
        assert_eq!(
            state.failure_reason,
            Some(FailureReason::ReservationExpired)
        );
        assert!(state.compensate_payment);
    }

    #[test]
    fn unknown_commit_retries_with_growing_backoff() {
        let charged = run(&[Outcome::Reserved, Outcome::Charged]);
        let first = advance(charged, Outcome::RetryLater);
        let second = advance(first.state, Outcome::RetryLater);
        assert_eq!(first.state.step, Step::Commit);
        assert_eq!(first.state.status, OrderStatus::Pending);
        assert!(second.retry_in > first.retry_in);
        assert_eq!(backoff(100), MAX_RETRY);
        // Progress resets the count.
        let confirmed = advance(second.state, Outcome::Committed);
        assert_eq!(confirmed.state.attempts, 0);
    }

    #[test]
    fn an_outcome_from_another_step_changes_nothing_but_attempts() {
        let state = SagaState::new_order();
        let next = advance(state, Outcome::Committed);
        assert_eq!(next.state.step, Step::Reserve);
        assert_eq!(next.state.status, OrderStatus::Pending);
        assert_eq!(next.state.attempts, 1);
    }

    #[test]
    fn only_confirmed_orders_cancel() {
        let confirmed = run(&[Outcome::Reserved, Outcome::Charged, Outcome::Committed]);
        let cancelled = cancel(confirmed).unwrap();
        assert_eq!(cancelled.status, OrderStatus::Cancelled);
        assert!(cancelled.compensate_stock && cancelled.compensate_payment);
        assert_eq!(cancel(cancelled).unwrap(), cancelled);
        assert_eq!(
            cancel(SagaState::new_order()),
            Err(CancelError::StillPending)
        );
        let failed = run(&[Outcome::ReserveFailed {
            reason: FailureReason::OutOfStock,
            maybe_reserved: false,
        }]);
        assert_eq!(cancel(failed), Err(CancelError::AlreadyFailed));
    }

    #[test]
    fn only_forward_steps_of_a_pending_order_go_unstored() {
        let placed = SagaState::new_order();
        let reserved = advance(placed, Outcome::Reserved).state;
        let charged = advance(reserved, Outcome::Charged).state;
        let confirmed = advance(charged, Outcome::Committed).state;
        assert!(needs_no_record(&placed, &reserved));
        assert!(needs_no_record(&reserved, &charged));
        // The status changes: stored.
        assert!(!needs_no_record(&charged, &confirmed));
        let declined = advance(
            reserved,
            Outcome::ChargeFailed {
                reason: FailureReason::CardDeclined,
                maybe_charged: false,
            },
        )
        .state;
        assert!(!needs_no_record(&reserved, &declined));
        // A refund's compensation goes forward from nothing of the kind.
        let cancelled = cancel(confirmed).expect("cancel a confirmed order");
        assert!(!needs_no_record(&confirmed, &cancelled));
    }

    #[test]
    fn a_resumed_order_failing_at_reserve_voids_a_charge_it_may_have() {
        // An earlier drive may have charged without storing `charge`.
        let expired = Outcome::ReserveFailed {
            reason: FailureReason::InventoryRejected,
            maybe_reserved: true,
        };
        let resumed = advance_resumed(SagaState::new_order(), expired).state;
        assert_eq!(resumed.status, OrderStatus::Failed);
        assert_eq!(resumed.step, Step::Compensate);
        assert!(resumed.compensate_stock && resumed.compensate_payment);
        let fresh = advance(SagaState::new_order(), expired).state;
        assert!(
            !fresh.compensate_payment,
            "a fresh order has charged nothing"
        );
        // Out of stock on resume: nothing held, the charge voided all the same.
        let out = Outcome::ReserveFailed {
            reason: FailureReason::OutOfStock,
            maybe_reserved: false,
        };
        let resumed = advance_resumed(SagaState::new_order(), out).state;
        assert_eq!(resumed.step, Step::Compensate);
        assert!(!resumed.compensate_stock && resumed.compensate_payment);
        // Past reserve, resuming changes nothing.
        let reserved = advance(SagaState::new_order(), Outcome::Reserved).state;
        assert_eq!(
            advance_resumed(reserved, Outcome::Charged),
            advance(reserved, Outcome::Charged)
        );
    }
}
