//! On-device latency runs over SSH (issue 5): `edgebench device` for one board and
//! `edgebench fleet` for an inventory of boards.
//!
//! A device run makes a fresh remote work directory (`mktemp -d`), copies the
//! target's `edgebench` binary and the selected models there, checks every file by
//! sha256 on the device, runs `edgebench run` remotely once per group of models (a
//! budget by default, so that the models of a claim stay interleaved), fetches each
//! group's JSON report as soon as it is done and writes it atomically under `--out`,
//! and removes the remote directory at the end, also after a failure or Ctrl-C.
//!
//! Everything goes through the system OpenSSH client ([`ssh`]), so `~/.ssh/config`,
//! agents, keys, ports and jump hosts work as the user has set them up. Host keys are
//! always checked (`StrictHostKeyChecking=yes`, or `accept-new` with
//! `--accept-new-host-key`), and every remote argument is shell-quoted.

mod facts;
mod fleet;
mod plan;
mod session;
pub mod ssh;

use std::path::PathBuf;
use std::time::Duration;

pub use facts::DeviceFacts;
pub use fleet::{Inventory, InventoryDevice, FLEET_REPORT_SCHEMA};
pub use plan::{GroupBy, ModelFile, ModelGroup};
pub use session::{DeviceGroupResult, DeviceReport, DEVICE_GROUP_SCHEMA, DEVICE_REPORT_SCHEMA};

use crate::error::HarnessError;

/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Bad options or input files: exit code 2.
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {cause}")]
    Local { path: PathBuf, cause: String },
    #[error("cannot run {program}: {cause}")]
    Spawn { program: String, cause: String },
    #[error("{0}")]
    Build(String),
    #[error(
        "host key of {host} not accepted ({cause}); check known_hosts, \
         or pass --accept-new-host-key for a first contact"
    )]
    HostKey { host: String, cause: String },
    #[error("cannot reach {host} within {secs} s (--connect-timeout): {cause}")]
    Unreachable {
        host: String,
        secs: u64,
        cause: String,
    },
    #[error("connection to {host} lost during {what}: {cause}")]
    ConnectionLost {
        host: String,
        what: String,
        cause: String,
    },
    #[error("{what} did not finish within {secs} s (--command-timeout) and was killed")]
    Timeout { what: String, secs: u64 },
    #[error("{what} failed on {host} (exit code {code}): {cause}")]
    RemoteFailed {
        host: String,
        what: String,
        code: i32,
        cause: String,
    },
    #[error("{file}: sha256 on the device is {remote}, expected {local}; the copy is corrupt")]
    Verify {
        file: String,
        local: String,
        remote: String,
    },
    #[error("interrupted")]
    Interrupted,
    /// A run that failed after some groups were saved.
    #[error(
        "{cause}\n{done} of {total} groups are saved in {out}; rerun with --resume to run only the missing ones",
        out = out.display()
    )]
    Incomplete {
        cause: Box<DeviceError>,
        done: usize,
        total: usize,
        out: PathBuf,
    },
    #[error(transparent)]
    Harness(#[from] HarnessError),
}

impl DeviceError {
    pub fn exit_code(&self) -> i32 {
        match self {
            DeviceError::Usage(_) => 2,
            DeviceError::Harness(h) if h.is_bad_input() => 2,
            DeviceError::Interrupted => EXIT_INTERRUPTED,
            // A failure that a Ctrl-C caused (the ssh client dies of it too) still
            // reports the interrupt.
            _ if ssh::interrupted() => EXIT_INTERRUPTED,
            DeviceError::Incomplete { cause, .. } => cause.exit_code(),
            _ => 1,
        }
    }
}

/// SSH connection options shared by `device` and `fleet`.
#[derive(Debug, Clone, clap::Args)]
pub struct SshArgs {
    /// Private key file for ssh (-i). Agents and ~/.ssh/config work without it.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// SSH port (-p); default from ~/.ssh/config or 22.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Extra OpenSSH option, passed as `-o OPT` (repeatable), e.g. ProxyJump=gw,
    /// UserKnownHostsFile=FILE. Host-key checking and batch mode cannot be changed.
    #[arg(long = "ssh-option", value_name = "OPT")]
    pub ssh_options: Vec<String>,
    /// Give up connecting after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub connect_timeout: u64,
    /// Kill any remote command (a copy, a benchmark group) running longer than this.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub command_timeout: u64,
    /// First contact: accept and remember an unknown host key
    /// (StrictHostKeyChecking=accept-new). A changed key is still refused.
    #[arg(long)]
    pub accept_new_host_key: bool,
}

/// What to run on the board, shared by `device` and `fleet`.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteRunArgs {
    /// The target's edgebench binary to deploy. Default: built with
    /// `cargo build --release --target <profile triple> -p bench-harness --bin edgebench`.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Shell text put before the remote binary, e.g. `nice -n -5`, `taskset 1`, or a
    /// qemu-arm command line to run an armv7 binary on a non-ARM "board" (tests).
    /// Inserted verbatim (it is your own command line), unlike every other argument,
    /// which is quoted.
    #[arg(long, value_name = "CMD")]
    pub remote_runner: Option<String>,
    /// Parent of the remote work directory (default: $TMPDIR or /tmp on the device).
    #[arg(long, value_name = "DIR")]
    pub remote_tmp: Option<String>,
    /// Comma-separated model names (default: all nine, unless --model-file is given).
    #[arg(long, value_name = "LIST")]
    pub models: Option<String>,
    /// Only the models of this budget (140, 40 or 12 MFLOPs).
    #[arg(long, value_parser = ["140", "40", "12"])]
    pub budget: Option<String>,
    /// Your own ONNX model to deploy and measure (repeatable), named by its file stem; a
    /// file named like a zoo model joins that model's budget group and claims.
    #[arg(long, value_name = "FILE")]
    pub model_file: Vec<PathBuf>,
    /// Local directory of the ONNX files; missing ones are exported there first.
    #[arg(long, default_value = model_zoo::DEFAULT_MODEL_DIR, value_name = "DIR")]
    pub model_dir: PathBuf,
    /// One remote benchmark per budget (interleaved, needed for the claims) or per model
    /// (finer-grained --resume).
    #[arg(long, value_enum, default_value = "budget")]
    pub group_by: GroupBy,
    /// Passed to the remote `edgebench run`.
    #[arg(long, value_name = "N")]
    pub min_runs: Option<String>,
    /// Passed to the remote `edgebench run` (e.g. 3s).
    #[arg(long, value_name = "TIME")]
    pub min_time: Option<String>,
    /// Passed to the remote `edgebench run` (e.g. 60s).
    #[arg(long, value_name = "TIME")]
    pub max_time: Option<String>,
    /// Passed to the remote `edgebench run`.
    #[arg(long, value_name = "N")]
    pub warmup_runs: Option<String>,
    /// Passed to the remote `edgebench run` (e.g. 1s).
    #[arg(long, value_name = "TIME")]
    pub warmup_time: Option<String>,
    /// Any other option for the remote `edgebench run` (repeatable), e.g.
    /// `--run-arg=--cpu --run-arg=0` or `--run-arg=--no-counters`.
    #[arg(long = "run-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub run_args: Vec<String>,
    /// Local results directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Keep the results already in --out and run only the missing groups.
    #[arg(long)]
    pub resume: bool,
}

/// `edgebench device` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// The board: `user@host`, `host` or a ~/.ssh/config alias.
    #[arg(long, value_name = "DEST")]
    pub host: String,
    /// Target profile of the board (imx6, rpi3, host).
    #[arg(long, value_name = "PROFILE", default_value = "imx6")]
    pub target: String,
    /// Name of the board in reports (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub ssh: SshArgs,
    #[command(flatten)]
    pub run: RemoteRunArgs,
}

/// `edgebench fleet` options.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Inventory of boards (TOML, see targets/devices.toml).
    #[arg(long, value_name = "FILE", default_value = "targets/devices.toml")]
    pub inventory: PathBuf,
    /// Only these boards (comma-separated names from the inventory).
    #[arg(long, value_name = "NAMES")]
    pub boards: Option<String>,
    /// Defaults for every board; the inventory's port and identity win, its ssh
    /// options come after these.
    #[command(flatten)]
    pub ssh: SshArgs,
    #[command(flatten)]
    pub run: RemoteRunArgs,
}

impl SshArgs {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout.max(1))
    }
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout.max(1))
    }
}

/// `edgebench device`: one board. Returns the exit code (errors are printed here).
pub fn run_device(args: &DeviceArgs) -> anyhow::Result<i32> {
    ssh::install_interrupt_handler();
    match session::device_main(args) {
        Ok(()) => Ok(0),
        Err(e) => {
            eprintln!("edgebench device: {e}");
            Ok(e.exit_code())
        }
    }
}

/// `edgebench fleet`: every board of the inventory in parallel, one run per board at
/// a time, then a side-by-side report. Returns the exit code.
pub fn run_fleet(args: &FleetArgs) -> anyhow::Result<i32> {
    ssh::install_interrupt_handler();
    match fleet::fleet_main(args) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("edgebench fleet: {e}");
            Ok(e.exit_code())
        }
    }
}
