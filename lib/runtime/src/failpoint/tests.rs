use std::time::Duration;

use super::*;

fn armed(points: &[&str]) -> Failpoints {
    let settings = FailpointSettings {
        failpoints: points.iter().map(|p| parse_failpoint(p).unwrap()).collect(),
        lose_responses: None,
    };
    let hits =
        prometheus::IntCounterVec::new(prometheus::Opts::new("hits", "hits"), &["failpoint"])
            .unwrap();
    Failpoints::new(&settings, hits)
}

#[test]
fn actions_parse_and_refuse_nonsense() {
    assert_eq!(
        parse_failpoint("saga.charge=delay(300ms)").unwrap(),
        (
            "saga.charge".into(),
            Action::Delay(Duration::from_millis(300))
        )
    );
    assert_eq!(
        parse_failpoint("/a.B/C=fail(0.5)").unwrap().1,
        Action::Fail {
            share: 0.5,
            code: tonic::Code::Unavailable
        }
    );
    assert_eq!(
        parse_failpoint("/a.B/C = fail(1, internal)").unwrap().1,
        Action::Fail {
            share: 1.0,
            code: tonic::Code::Internal
        }
    );
    assert_eq!(
        parse_failpoint("x=fail(1,deadline_exceeded)").unwrap().1,
        Action::Fail {
            share: 1.0,
            code: tonic::Code::DeadlineExceeded
        }
    );
    assert_eq!(
        parse_failpoint("/a.B/C=lose(2)").unwrap().1,
        Action::Lose(2)
    );
    assert_eq!(
        action::parse_lose_responses("/a.B/C=3").unwrap(),
        ("/a.B/C".into(), Action::Lose(3))
    );
    for bad in [
        "noaction",
        "=delay(1s)",
        "x=delay(soon)",
        "x=fail(2)",
        "x=fail(0.1,nope)",
        "x=lose(-1)",
        "x=explode(1)",
        "x=delay(1s",
        "x=lose(1,2)",
    ] {
        assert!(parse_failpoint(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn each_action_does_what_it_says_and_only_at_its_point() {
    let points = armed(&[
        "a=fail(1,internal)",
        "b=fail(0)",
        "c=lose(2)",
        "d=delay(10ms)",
    ]);
    assert_eq!(points.before("a").await, Hit::Fail(tonic::Code::Internal));
    assert_eq!(points.before("b").await, Hit::Pass);
    assert_eq!(points.before("elsewhere").await, Hit::Pass);
    assert!(points.lose_now("c") && points.lose_now("c"));
    assert!(!points.lose_now("c"), "two responses lost, then none");
    assert!(!points.lose_now("a"));
    assert_eq!(points.delay_of("d"), Some(Duration::from_millis(10)));
    assert_eq!(points.before("d").await, Hit::Pass);
    let hits = points.hits.as_ref().unwrap();
    assert_eq!(hits.with_label_values(&["a"]).get(), 1);
    assert_eq!(hits.with_label_values(&["c"]).get(), 2);
    assert_eq!(hits.with_label_values(&["d"]).get(), 1);
    assert_eq!(hits.with_label_values(&["b"]).get(), 0);
    assert!(Failpoints::default().is_empty());
}

#[tokio::test]
async fn a_share_fails_about_that_share() {
    let points = armed(&["a=fail(0.3)"]);
    let mut failed = 0;
    for _ in 0..1000 {
        if points.before("a").await != Hit::Pass {
            failed += 1;
        }
    }
    assert!(
        (200..400).contains(&failed),
        "{failed} of 1000 failed at a share of 0.3"
    );
}
