//! The nemesis: a seeded schedule of faults, one at a time, each held for
//! a while and then undone. The same seed gives the same schedule (kinds,
//! targets, durations, pauses); what the clients do meanwhile depends on
//! timing too.

use std::time::{Duration, Instant};

use super::cluster::{Cluster, HOSTS, ROLES};
use super::history::{FaultEvent, History};

/// SplitMix64: small, seedable, the same on every platform and version.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A duration between `lo` and `hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// The links a partition may cut: the order service's to everything, and
/// each service's to PostgreSQL.
const LINKS: [(&str, &str); 5] = [
    ("order", "inventory"),
    ("order", "payment"),
    ("order", "pg"),
    ("inventory", "pg"),
    ("payment", "pg"),
];

const SAGA_STEPS: [&str; 4] = [
    "saga.reserve",
    "saga.charge",
    "saga.commit",
    "saga.compensate",
];

/// One fault to inject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Both ways between two hosts.
    Partition(&'static str, &'static str),
    /// Only packets from the first host to the second.
    OneWay(&'static str, &'static str),
    /// A host's link down: it reaches nobody, nobody reaches it.
    Isolate(&'static str),
    /// kill -9 of a role, started again when the fault ends.
    Kill(&'static str),
    /// PostgreSQL stopped, started again when the fault ends.
    PostgresRestart,
    /// The order service restarted (kill -9) with a failpoint on a saga
    /// step, and again without it when the fault ends.
    SlowStep(String),
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Partition(..) => "partition",
            Fault::OneWay(..) => "one-way partition",
            Fault::Isolate(_) => "isolated host",
            Fault::Kill(_) => "kill -9",
            Fault::PostgresRestart => "postgres restart",
            Fault::SlowStep(_) => "slow or failing step",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Fault::Partition(a, b) => format!("{a} <-> {b}"),
            Fault::OneWay(from, to) => format!("{from} -> {to}"),
            Fault::Isolate(host) | Fault::Kill(host) => (*host).to_owned(),
            Fault::PostgresRestart => "pg".to_owned(),
            Fault::SlowStep(failpoint) => failpoint.clone(),
        }
    }

    /// A fault drawn from `rng`.
    pub fn draw(rng: &mut Rng) -> Self {
        match rng.below(6) {
            0 => {
                let (a, b) = *rng.pick(&LINKS);
                Fault::Partition(a, b)
            }
            1 => {
                let (a, b) = *rng.pick(&LINKS);
                if rng.below(2) == 0 {
                    Fault::OneWay(a, b)
                } else {
                    Fault::OneWay(b, a)
                }
            }
            2 => Fault::Isolate(HOSTS[rng.below(HOSTS.len() as u64) as usize]),
            3 => Fault::Kill(ROLES[rng.below(ROLES.len() as u64) as usize]),
            4 => Fault::PostgresRestart,
            _ => {
                let step = rng.pick(&SAGA_STEPS);
                let action = if rng.below(2) == 0 {
                    format!("delay({}ms)", 200 + rng.below(2300))
                } else {
                    format!("fail(0.{})", 2 + rng.below(6))
                };
                Fault::SlowStep(format!("{step}={action}"))
            }
        }
    }

    async fn inject(&self, cluster: &mut Cluster) {
        match self {
            Fault::Partition(a, b) => {
                let (a, b) = (cluster.host(a).clone(), cluster.host(b).clone());
                tokio::task::block_in_place(|| cluster.network.cut(&a, &b));
            }
            Fault::OneWay(from, to) => {
                let (from, to) = (cluster.host(from).clone(), cluster.host(to).clone());
                tokio::task::block_in_place(|| cluster.network.cut_one_way(&from, &to));
            }
            Fault::Isolate(host) => {
                let host = cluster.host(host).clone();
                tokio::task::block_in_place(|| cluster.network.isolate(&host));
            }
            Fault::Kill(role) => cluster.kill(role).await,
            Fault::PostgresRestart => cluster.postgres_down(),
            Fault::SlowStep(failpoint) => {
                cluster.set_failpoints("order", vec![failpoint.clone()]);
                cluster.kill("order").await;
                cluster.start_role("order").await;
            }
        }
    }

    async fn undo(&self, cluster: &mut Cluster) {
        match self {
            Fault::Partition(a, b) | Fault::OneWay(a, b) => {
                let (a, b) = (cluster.host(a).clone(), cluster.host(b).clone());
                tokio::task::block_in_place(|| cluster.network.heal(&a, &b));
            }
            Fault::Isolate(host) => {
                let host = cluster.host(host).clone();
                tokio::task::block_in_place(|| cluster.network.rejoin(&host));
            }
            Fault::Kill(role) => cluster.start_role(role).await,
            Fault::PostgresRestart => cluster.postgres_up(),
            Fault::SlowStep(_) => {
                cluster.set_failpoints("order", Vec::new());
                cluster.kill("order").await;
                cluster.start_role("order").await;
            }
        }
    }
}

/// The most faults one run injects, whatever its length.
const MAX_FAULTS: usize = 2000;

/// Injects faults drawn from `seed` until `until`, one at a time: a calm
/// of 0.3 to 1.5 s, then a fault held 0.5 to 4 s and undone. Returns with
/// every fault undone.
pub async fn run(cluster: &mut Cluster, seed: u64, until: Instant, history: &History) {
    let mut rng = Rng::new(seed);
    for _ in 0..MAX_FAULTS {
        let calm = rng.millis(300, 1500);
        let fault = Fault::draw(&mut rng);
        let hold = rng.millis(500, 4000);
        if Instant::now() + calm >= until {
            break;
        }
        tokio::time::sleep(calm).await;
        let started_ms = history.now_ms();
        fault.inject(cluster).await;
        tokio::time::sleep(hold).await;
        fault.undo(cluster).await;
        history.fault(FaultEvent {
            started_ms,
            ended_ms: history.now_ms(),
            kind: fault.kind(),
            detail: fault.detail(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_and_another_seed_another() {
        let schedule = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|_| (rng.millis(300, 1500), Fault::draw(&mut rng)))
                .collect::<Vec<_>>()
        };
        assert_eq!(schedule(7), schedule(7));
        assert_ne!(schedule(7), schedule(8));
        let kinds: std::collections::BTreeSet<_> =
            schedule(7).iter().map(|(_, f)| f.kind()).collect();
        assert_eq!(kinds.len(), 6, "every kind is drawn: {kinds:?}");
    }
}
