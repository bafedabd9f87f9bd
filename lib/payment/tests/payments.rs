//! The payment service over real gRPC on loopback, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;

use ordermesh_app::Role;
use ordermesh_proto::common::v1::Money;
use ordermesh_proto::payment::v1::payment_service_client::PaymentServiceClient;
use ordermesh_proto::payment::v1::{
    GetPaymentRequest, PaymentStatus, ProcessPaymentRequest, RefundPaymentRequest,
};
use ordermesh_runtime::status::reason;
use ordermesh_testkit::{TestApp, TestDatabase};
use tonic::Code;
use tonic::transport::Channel;

struct Running {
    client: PaymentServiceClient<Channel>,
    _app: TestApp,
}

/// The payment role alone, in-process on loopback.
async fn start(database: TestDatabase, decline_rate: f64) -> Running {
    let app = TestApp::spawn_roles(Arc::new(database), &[Role::Payment], |app| {
        app.payment.decline_rate = decline_rate;
    })
    .await;
    let channel = Channel::from_shared(app.url(Role::Payment))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Running {
        client: PaymentServiceClient::new(channel),
        _app: app,
    }
}

fn charge(order_id: &str, minor_units: i64, token: &str) -> ProcessPaymentRequest {
    ProcessPaymentRequest {
        order_id: order_id.into(),
        amount: Some(Money {
            currency_code: "USD".into(),
            minor_units,
        }),
        payment_method: token.into(),
    }
}

async fn every_rule(database: TestDatabase) {
    let running = start(database, 0.0).await;
    let mut client = running.client.clone();

    // Each token's outcome.
    let paid = client
        .process_payment(charge("ord_a", 1500, "pm_card_visa"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    let declined = client
        .process_payment(charge("ord_b", 1500, "pm_card_insufficientFunds"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(declined.status(), PaymentStatus::Declined);
    assert_eq!(declined.decline_reason, "insufficient_funds");
    let transient = client
        .process_payment(charge("ord_c", 1500, "pm_card_processingError"))
        .await
        .unwrap_err();
    assert_eq!(transient.code(), Code::Unavailable);
    assert_eq!(reason(&transient).as_deref(), Some("PROCESSOR_UNAVAILABLE"));
    let nothing = client
        .get_payment(GetPaymentRequest {
            order_id: "ord_c".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        nothing.code(),
        Code::NotFound,
        "a processing error stores nothing"
    );

    // A replay returns the same payment; a different amount is a conflict.
    let replay = client
        .process_payment(charge("ord_a", 1500, "pm_card_visa"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.payment_id, paid.payment_id);
    let conflict = client
        .process_payment(charge("ord_a", 9999, "pm_card_visa"))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists);

    // Refund, twice; then the charge replays as refunded, never charging again.
    let refunded = client
        .refund_payment(RefundPaymentRequest {
            order_id: "ord_a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refunded.status(), PaymentStatus::Refunded);
    let again = client
        .refund_payment(RefundPaymentRequest {
            order_id: "ord_a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.status(), PaymentStatus::Refunded);
    let after = client
        .process_payment(charge("ord_a", 1500, "pm_card_visa"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.status(), PaymentStatus::Refunded);

    // A refund before any charge voids the order; the late charge is refused.
    let voided = client
        .refund_payment(RefundPaymentRequest {
            order_id: "ord_late".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(voided.status(), PaymentStatus::Voided);
    let late = client
        .process_payment(charge("ord_late", 100, "pm_card_visa"))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(reason(&late).as_deref(), Some("PAYMENT_VOIDED"));

    // Racing retries of one charge make one payment.
    let racers = (0..20).map(|_| {
        let mut client = client.clone();
        async move {
            client
                .process_payment(charge("ord_race", 700, "pm_card_visa"))
                .await
        }
    });
    let ids: HashSet<String> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(|r| r.expect("every retry answers").into_inner().payment_id)
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");

    // Bad input, without echoing an unknown token.
    let bad = client
        .process_payment(charge("ord_x", 100, "pm_live_supersecret123"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        !bad.message().contains("supersecret123"),
        "{}",
        bad.message()
    );
    let zero = client
        .process_payment(charge("ord_x", 0, "pm_card_visa"))
        .await
        .unwrap_err();
    assert_eq!(zero.code(), Code::InvalidArgument);
    let mut no_currency = charge("ord_x", 10, "pm_card_visa");
    no_currency.amount.as_mut().unwrap().currency_code = "usd".into();
    let bad_currency = client.process_payment(no_currency).await.unwrap_err();
    assert_eq!(bad_currency.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn every_rule_on_sqlite() {
    every_rule(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn every_rule_on_postgres() {
    if let Some(database) = TestDatabase::postgres().await {
        every_rule(database).await;
    }
}

#[tokio::test]
async fn a_full_decline_rate_declines_good_cards() {
    let running = start(TestDatabase::sqlite(), 1.0).await;
    let mut client = running.client.clone();
    let payment = client
        .process_payment(charge("ord_r", 100, "pm_card_visa"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(payment.status(), PaymentStatus::Declined);
    assert_eq!(payment.decline_reason, "card_declined");
}
