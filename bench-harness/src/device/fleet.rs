//! Fleets: every board of an inventory in parallel (one thread per board, one run per
//! board at a time), then one report with the boards side by side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use target_profiles::Profile;

use super::plan::{file_safe, plan_groups};
use super::session::{
    build_binary, passthrough_args, prepare_out, run_board, ssh_target, BoardJob, DeviceReport,
};
use super::{ssh, DeviceError, FleetArgs, SshArgs, EXIT_INTERRUPTED};
use crate::export::write_new_file;

pub const FLEET_REPORT_SCHEMA: &str = "edgebench/fleet-report/v1";

/// `targets/devices.toml`: `[[device]]` tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(rename = "device")]
    pub devices: Vec<InventoryDevice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryDevice {
    /// Unique name; also the board's results directory under `--out`.
    pub name: String,
    /// ssh destination: `user@host`, `host` or a ~/.ssh/config alias.
    pub host: String,
    /// Target profile (imx6, rpi3, host).
    pub target: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub identity: Option<PathBuf>,
    /// Extra `-o` options, after the command line's.
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// As `--remote-runner`, for this board.
    #[serde(default)]
    pub remote_runner: Option<String>,
    /// As `--remote-tmp`, for this board.
    #[serde(default)]
    pub remote_tmp: Option<String>,
    /// As `--binary`, for this board.
    #[serde(default)]
    pub binary: Option<PathBuf>,
}

impl Inventory {
    pub fn parse(origin: &Path, text: &str) -> Result<Inventory, DeviceError> {
        let bad = |problem: String| DeviceError::Usage(format!("{}: {problem}", origin.display()));
        let inv: Inventory = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
        if inv.devices.is_empty() {
            return Err(bad("no [[device]] entries".into()));
        }
        for (i, d) in inv.devices.iter().enumerate() {
            if d.name.is_empty() || file_safe(&d.name) != d.name {
                return Err(bad(format!(
                    "device name {:?} must be letters, digits, '.', '-' or '_'",
                    d.name
                )));
            }
            if inv.devices[..i].iter().any(|o| o.name == d.name) {
                return Err(bad(format!("device name {:?} appears twice", d.name)));
            }
        }
        Ok(inv)
    }

    pub fn load(path: &Path) -> Result<Inventory, DeviceError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DeviceError::Usage(format!("{}: {e}", path.display())))?;
        Inventory::parse(path, &text)
    }
}

/// `fleet-report.json`: every board's merged report, or why it has none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetReport {
    pub schema: String,
    pub boards: Vec<FleetBoard>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetBoard {
    pub name: String,
    pub host: String,
    pub target: String,
    /// "ok" or "failed: <error>".
    pub status: String,
    pub results_dir: String,
    pub report: Option<DeviceReport>,
}

/// The boards side by side: median latency per model, then each claim's verdict per
/// board (the claims are checked on each board by its own `edgebench run`).
pub fn fleet_markdown(report: &FleetReport) -> String {
    let mut md = String::from(
        "# edgebench fleet\n\n| board | host | target | status |\n|---|---|---|---|\n",
    );
    for b in &report.boards {
        md += &format!(
            "| {} | {} | {} | {} |\n",
            b.name, b.host, b.target, b.status
        );
    }
    let boards: Vec<&FleetBoard> = report
        .boards
        .iter()
        .filter(|b| b.report.is_some())
        .collect();
    if boards.is_empty() {
        return md;
    }
    // Rows keep first-seen order across boards.
    let mut models: Vec<(String, String)> = Vec::new();
    let mut claims: Vec<(u32, String, String, String, f64)> = Vec::new();
    for b in &boards {
        let r = &b.report.as_ref().expect("filtered").report;
        for m in &r.models {
            let key = (m.name.clone(), m.engine.clone());
            if !models.contains(&key) {
                models.push(key);
            }
        }
        for c in &r.claims {
            let key = (
                c.budget_mflops,
                c.engine.clone(),
                c.fd_model.clone(),
                c.other_model.clone(),
                c.claimed_speedup,
            );
            if !claims.contains(&key) {
                claims.push(key);
            }
        }
    }
    let header = |first: &str| {
        let mut h = format!("| {first} |");
        let mut rule = String::from("|---|");
        for b in &boards {
            h += &format!(" {} |", b.name);
            rule += "---|";
        }
        format!("{h}\n{rule}\n")
    };
    md += "\n## Median latency, ms (95% CI)\n\n";
    md += &header("model (engine)");
    for (name, engine) in &models {
        md += &format!("| {name} ({engine}) |");
        for b in &boards {
            let r = &b.report.as_ref().expect("filtered").report;
            md += &match r.model(name, engine) {
                Some(m) => format!(
                    " {:.2} ({:.2}-{:.2}) |",
                    m.stats.median_ms, m.stats.median_ci95_ms[0], m.stats.median_ci95_ms[1]
                ),
                None => " - |".into(),
            };
        }
        md += "\n";
    }
    if !claims.is_empty() {
        md += "\n## Claims per board: measured speedup [95% CI], verdict\n\n";
        md += &header("claim");
        for (budget, engine, fd, other, claimed) in &claims {
            md +=
                &format!("| {budget} MFLOPs, {fd} vs {other} ({engine}), claimed {claimed:.2}x |");
            for b in &boards {
                let r = &b.report.as_ref().expect("filtered").report;
                let found = r.claims.iter().find(|c| {
                    c.budget_mflops == *budget
                        && c.engine == *engine
                        && c.fd_model == *fd
                        && c.other_model == *other
                });
                md += &match found {
                    Some(c) => format!(
                        " {:.2}x [{:.2}, {:.2}] {} |",
                        c.measured_speedup, c.ci95[0], c.ci95[1], c.verdict
                    ),
                    None => " - |".into(),
                };
            }
            md += "\n";
        }
    }
    md
}

fn merged_ssh_args(defaults: &SshArgs, device: &InventoryDevice) -> SshArgs {
    let mut args = defaults.clone();
    if device.port.is_some() {
        args.port = device.port;
    }
    if device.identity.is_some() {
        args.identity = device.identity.clone();
    }
    args.ssh_options.extend(device.ssh_options.iter().cloned());
    args
}

pub(crate) fn fleet_main(args: &FleetArgs) -> Result<i32, DeviceError> {
    let inventory = Inventory::load(&args.inventory)?;
    let selected: Vec<InventoryDevice> = match &args.boards {
        None => inventory.devices.clone(),
        Some(list) => {
            let mut v = Vec::new();
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let d = inventory
                    .devices
                    .iter()
                    .find(|d| d.name == name)
                    .ok_or_else(|| {
                        DeviceError::Usage(format!(
                            "{}: no board named {name:?}",
                            args.inventory.display()
                        ))
                    })?;
                v.push(d.clone());
            }
            v
        }
    };
    let out_root = args
        .run
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results/fleet"));
    let groups = plan_groups(&args.run)?;

    // Every board's job, checked before anything runs.
    let mut jobs = Vec::new();
    for d in &selected {
        let profile = Profile::by_name(&d.target).map_err(|e| {
            DeviceError::Usage(format!(
                "{}: board {}: {e}",
                args.inventory.display(),
                d.name
            ))
        })?;
        let ssh_args = merged_ssh_args(&args.ssh, d);
        let ssh = ssh_target(&d.host, &ssh_args).map_err(|e| {
            DeviceError::Usage(format!(
                "{}: board {}: {e}",
                args.inventory.display(),
                d.name
            ))
        })?;
        let job = BoardJob {
            board: d.name.clone(),
            ssh,
            target: profile.name.clone(),
            remote_runner: d
                .remote_runner
                .clone()
                .or_else(|| args.run.remote_runner.clone())
                .filter(|r| !r.trim().is_empty()),
            remote_tmp: d.remote_tmp.clone().or_else(|| args.run.remote_tmp.clone()),
            groups: groups.clone(),
            run_args: passthrough_args(&args.run),
            out: out_root.join(&d.name),
            command_timeout: ssh_args.command_timeout(),
            resume: args.run.resume,
        };
        let prepared = prepare_out(&job)?;
        let binary = d.binary.clone().or_else(|| args.run.binary.clone());
        if let Some(b) = &binary {
            if !b.is_file() {
                return Err(DeviceError::Usage(format!(
                    "{}: binary for board {}: no such file",
                    b.display(),
                    d.name
                )));
            }
        }
        jobs.push((job, prepared, binary, profile));
    }

    // Build each missing target binary once, before the boards start.
    let mut built: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (_, prepared, binary, profile) in &mut jobs {
        if binary.is_none() && !prepared.pending.is_empty() {
            let triple = profile.resolved_triple().to_string();
            let path = match built.get(&triple) {
                Some(p) => p.clone(),
                None => {
                    let p = build_binary(&triple)?;
                    built.insert(triple, p.clone());
                    p
                }
            };
            *binary = Some(path);
        }
    }

    // One thread per board (same destination and port = same board: its entries run
    // one after another).
    let mut by_board: BTreeMap<String, Vec<(BoardJob, super::session::Prepared, Option<PathBuf>)>> =
        BTreeMap::new();
    for (job, prepared, binary, _) in jobs {
        let key = format!("{}|{:?}", job.ssh.destination, job.ssh.port);
        by_board
            .entry(key)
            .or_default()
            .push((job, prepared, binary));
    }
    let outcomes: Vec<(BoardJob, Result<DeviceReport, DeviceError>)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = by_board
                .into_values()
                .map(|entries| {
                    scope.spawn(move || {
                        entries
                            .into_iter()
                            .map(|(job, prepared, binary)| {
                                let label = job.board.clone();
                                let say = move |line: &str| println!("[{label}] {line}");
                                let result = run_board(&job, prepared, binary.as_deref(), &say)
                                    .map(|(report, _)| report);
                                if let Err(e) = &result {
                                    eprintln!("[{}] failed: {e}", job.board);
                                }
                                (job, result)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("board threads do not panic"))
                .collect()
        });

    let mut boards = Vec::new();
    let mut failed = 0;
    for name in selected.iter().map(|d| &d.name) {
        let (job, result) = outcomes
            .iter()
            .find(|(j, _)| &j.board == name)
            .expect("every selected board ran");
        let (status, report) = match result {
            Ok(r) => ("ok".to_string(), Some(r.clone())),
            Err(e) => {
                failed += 1;
                (
                    format!("failed: {}", e.to_string().replace('\n', " ")),
                    None,
                )
            }
        };
        boards.push(FleetBoard {
            name: job.board.clone(),
            host: job.ssh.host_label(),
            target: job.target.clone(),
            status,
            results_dir: job.out.display().to_string(),
            report,
        });
    }
    let report = FleetReport {
        schema: FLEET_REPORT_SCHEMA.into(),
        boards,
    };
    let suffix = (1..)
        .map(|n: u32| {
            if n == 1 {
                String::new()
            } else {
                format!("-{n}")
            }
        })
        .find(|s| {
            !out_root.join(format!("fleet-report{s}.json")).exists()
                && !out_root.join(format!("fleet-report{s}.md")).exists()
        })
        .expect("some suffix is free");
    let md = fleet_markdown(&report);
    let mut text = serde_json::to_string_pretty(&report).expect("reports serialize");
    text.push('\n');
    let json_path = out_root.join(format!("fleet-report{suffix}.json"));
    write_new_file(&json_path, text.as_bytes())?;
    write_new_file(
        &out_root.join(format!("fleet-report{suffix}.md")),
        md.as_bytes(),
    )?;
    println!("{md}");
    println!("fleet report: {}", json_path.display());
    if ssh::interrupted() {
        return Ok(EXIT_INTERRUPTED);
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_inventory_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../targets/devices.toml");
        let inv = Inventory::load(&path).unwrap();
        assert!(inv.devices.len() >= 2);
        for d in &inv.devices {
            Profile::by_name(&d.target).unwrap();
        }
    }

    #[test]
    fn inventory_errors_name_the_file_and_the_problem() {
        let p = Path::new("inv.toml");
        let typo = "[[device]]\nname = \"a\"\nhost = \"h\"\ntarget = \"imx6\"\nprot = 22\n";
        let e = Inventory::parse(p, typo).unwrap_err().to_string();
        assert!(e.starts_with("inv.toml: ") && e.contains("prot"), "{e}");
        let twice = "[[device]]\nname = \"a\"\nhost = \"h\"\ntarget = \"imx6\"\n\
                     [[device]]\nname = \"a\"\nhost = \"g\"\ntarget = \"imx6\"\n";
        let e = Inventory::parse(p, twice).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        let bad_name = "[[device]]\nname = \"a/b\"\nhost = \"h\"\ntarget = \"imx6\"\n";
        assert!(Inventory::parse(p, bad_name).is_err());
    }
}
