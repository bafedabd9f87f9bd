//! The machine the suite ran on, from /proc (through procfs), and the
//! versions of Envoy and PostgreSQL it measured.

use std::path::Path;
use std::time::Duration;

use procfs::{CpuInfo, Current, LoadAverage, Meminfo};
use serde::Serialize;
use sqlx::Connection;

use super::CompareArgs;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub load_average_at_start: String,
    pub envoy: Option<String>,
    pub postgres: Option<String>,
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg prints them.
pub fn load_average() -> String {
    LoadAverage::current().map_or_else(
        |_| String::new(),
        |load| format!("{:.2} {:.2} {:.2}", load.one, load.five, load.fifteen),
    )
}

pub async fn machine(envoy: Option<&Path>, args: &CompareArgs) -> Machine {
    let cpu = CpuInfo::current()
        .ok()
        .and_then(|info| info.model_name(0).map(str::to_owned))
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let memory_gib = Meminfo::current().map_or(0.0, |m| m.mem_total as f64 / (1u64 << 30) as f64);
    // The whole release string (procfs's KernelVersion keeps only the numbers).
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib,
        kernel: kernel.trim().to_owned(),
        load_average_at_start: load_average(),
        envoy: envoy.and_then(envoy_version),
        postgres: if args.skip_postgres {
            None
        } else {
            postgres_version(&args.postgres_url).await
        },
    }
}

/// From `envoy --version`: the word after `version:` (`SHA/1.40.0/Clean/RELEASE/BoringSSL`).
fn envoy_version(envoy: &Path) -> Option<String> {
    let output = std::process::Command::new(envoy)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.split("version:").nth(1)?.split_whitespace().next()?;
    Some(version.to_owned())
}

async fn postgres_version(url: &str) -> Option<String> {
    let connect = sqlx::PgConnection::connect(url);
    let mut connection = tokio::time::timeout(Duration::from_secs(3), connect)
        .await
        .ok()?
        .ok()?;
    let version = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut connection)
        .await
        .ok();
    let _ = connection.close().await;
    version
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_averages_read_as_three_numbers() {
        let load = load_average();
        let numbers: Vec<f64> = load.split(' ').map(|n| n.parse().unwrap()).collect();
        assert_eq!(numbers.len(), 3, "{load}");
    }
}
