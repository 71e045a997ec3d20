//! `borg quota set|get`: quotas per (user, priority band) (docs/security.md).

use super::render::table;
use super::{master_client, GlobalArgs, OutputFormat};
use crate::cli::rpc::cell_client;
use anyhow::{bail, Context};
use borg_common::new_request_id;
use borg_model::resources::format_bytes;
use borg_model::Resources;
use borg_proto::v1;
use clap::Subcommand;
use serde_json::json;

/// A quota of every dimension at its maximum: what `--unlimited` sets.
pub const UNLIMITED: Resources = Resources::UNLIMITED;

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set USER's quota in BAND (batch, production or monitoring; admins only). Dimensions
    /// left out are 0; all 0 removes the quota. Units as in BCL: cpu=2 or cpu=500m,
    /// ram=4Gi, disk=100G, gpu=1.
    Set {
        user: String,
        band: String,
        /// `cpu=.. ram=.. [disk=..] [gpu=..]`
        #[arg(value_name = "DIM=AMOUNT", required_unless_present = "unlimited")]
        limits: Vec<String>,
        /// No limit in any dimension.
        #[arg(long, conflicts_with = "limits")]
        unlimited: bool,
    },
    /// Show quotas (of USER, or everyone's) and what active jobs use of them.
    Get { user: Option<String> },
}

/// Parses `cpu=2 ram=4Gi ...` with BCL's own units: each amount is evaluated as that field
/// of a task's `resources` (BCL insists on cpu and ram there, so the other one gets a
/// placeholder). Dimensions left out, and `0`, are 0.
pub fn parse_limits(items: &[String]) -> anyhow::Result<Resources> {
    let mut limit = Resources::ZERO;
    for item in items {
        let Some((key, value)) = item.split_once('=') else {
            bail!("{item:?} is not DIM=AMOUNT (e.g. cpu=2 ram=4Gi)");
        };
        let (key, value) = (key.trim(), value.trim());
        if !["cpu", "ram", "disk", "gpu"].contains(&key) || value.is_empty() {
            bail!("{item:?}: the dimensions are cpu, ram, disk and gpu, each with an amount");
        }
        if value == "0" {
            continue;
        }
        let fields = match key {
            "cpu" => format!("cpu = {value} ram = 1"),
            "ram" => format!("cpu = 1m ram = {value}"),
            _ => format!("cpu = 1m ram = 1 {key} = {value}"),
        };
        let source = format!("job quota = {{ command = 'quota' resources = {{ {fields} }} }}");
        let loaded = bcl::load_str(&source, "quota")
            .map_err(|d| anyhow::anyhow!("bad amount in {item:?}:\n{d}"))?;
        let resources = loaded
            .jobs
            .first()
            .map(|job| job.task.resources)
            .with_context(|| format!("{item:?} did not evaluate to an amount"))?;
        match key {
            "cpu" => limit.cpu_millis = resources.cpu_millis,
            "ram" => limit.ram_bytes = resources.ram_bytes,
            "disk" => limit.disk_bytes = resources.disk_bytes,
            _ => limit.gpus = resources.gpus,
        }
    }
    Ok(limit)
}

pub async fn run(command: QuotaCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = master_client(global)?;
    match command {
        QuotaCommand::Set {
            user,
            band,
            limits,
            unlimited,
        } => {
            let limit = if unlimited {
                UNLIMITED
            } else {
                parse_limits(&limits)?
            };
            let request = v1::SetQuotaRequest {
                user: user.clone(),
                band: band.clone(),
                limit: Some(limit.into()),
                request_id: new_request_id("quota"),
            };
            let response = client
                .call(|channel| {
                    let request = request.clone();
                    async move {
                        cell_client(channel)
                            .set_quota(request)
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await
                .with_context(|| format!("setting the quota of {user} in band {band}"))?;
            match (global.output, response.quota) {
                (OutputFormat::Json, quota) => println!(
                    "{:#}",
                    json!({"quota": quota.as_ref().map(quota_json), "index": response.index})
                ),
                (OutputFormat::Text, Some(quota)) => println!("{}", quotas_text(&[quota])),
                (OutputFormat::Text, None) => {
                    println!("quota of {user} in band {band} removed")
                }
            }
        }
        QuotaCommand::Get { user } => {
            let request = v1::GetQuotaRequest {
                user: user.unwrap_or_default(),
            };
            let response = client
                .call(|channel| {
                    let request = request.clone();
                    async move {
                        cell_client(channel)
                            .get_quota(request)
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await
                .context("reading quotas")?;
            match global.output {
                OutputFormat::Json => println!(
                    "{:#}",
                    serde_json::Value::Array(response.quotas.iter().map(quota_json).collect())
                ),
                OutputFormat::Text if response.quotas.is_empty() => println!(
                    "no quotas; only the free band (priority 0-99) can be used. Admins: borg quota set USER BAND cpu=.. ram=.."
                ),
                OutputFormat::Text => println!("{}", quotas_text(&response.quotas)),
            }
        }
    }
    Ok(())
}

fn resources(r: &Option<v1::Resources>) -> Resources {
    r.map(Resources::from).unwrap_or(Resources::ZERO)
}

/// `used/limit` per dimension, `-` for unlimited.
fn amount(used: u64, limit: u64, show: impl Fn(u64) -> String) -> String {
    if limit == u64::MAX {
        format!("{}/-", show(used))
    } else {
        format!("{}/{}", show(used), show(limit))
    }
}

fn quotas_text(quotas: &[v1::Quota]) -> String {
    let rows: Vec<Vec<String>> = quotas
        .iter()
        .map(|q| {
            let (limit, used) = (resources(&q.limit), resources(&q.used));
            vec![
                q.user.clone(),
                q.band.clone(),
                amount(used.cpu_millis, limit.cpu_millis, |n| format!("{n}m")),
                amount(used.ram_bytes, limit.ram_bytes, format_bytes),
                amount(used.disk_bytes, limit.disk_bytes, format_bytes),
                amount(
                    u64::from(used.gpus),
                    if limit.gpus == u32::MAX {
                        u64::MAX
                    } else {
                        u64::from(limit.gpus)
                    },
                    |n| n.to_string(),
                ),
            ]
        })
        .collect();
    table(
        &["USER", "BAND", "CPU USED/LIMIT", "RAM", "DISK", "GPU"],
        &rows,
    )
}

fn quota_json(q: &v1::Quota) -> serde_json::Value {
    let dims = |r: Resources| json!({"cpu_millis": r.cpu_millis, "ram_bytes": r.ram_bytes, "disk_bytes": r.disk_bytes, "gpus": r.gpus});
    json!({
        "user": q.user,
        "band": q.band,
        "limit": dims(resources(&q.limit)),
        "used": dims(resources(&q.used)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_with_bcl_units_and_bad_ones_are_explained() {
        let r = parse_limits(&["cpu=1.5".into(), "ram=2Gi".into(), "gpu=1".into()]).unwrap();
        assert_eq!(r.cpu_millis, 1_500);
        assert_eq!(r.ram_bytes, 2 << 30);
        assert_eq!(r.gpus, 1);
        assert_eq!(parse_limits(&["cpu=250m".into()]).unwrap().cpu_millis, 250);
        assert_eq!(
            parse_limits(&["cpu=0".into(), "ram=0".into()]).unwrap(),
            Resources::ZERO
        );
        assert_eq!(
            parse_limits(&["disk=10G".into()]).unwrap().disk_bytes,
            10_000_000_000
        );
        assert!(parse_limits(&["mem=1Gi".into()])
            .unwrap_err()
            .to_string()
            .contains("dimensions"));
        assert!(parse_limits(&["cpu".into()]).is_err());
        assert!(parse_limits(&["ram=lots".into()]).is_err());
    }
}
