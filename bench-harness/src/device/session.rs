//! One board: deploy, verify, run group by group, fetch, clean up.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use target_profiles::Profile;

use super::facts::{facts_command, parse_facts, DeviceFacts};
use super::plan::{file_safe, plan_groups, sha256_file, ModelGroup};
use super::ssh::{self, quote, quote_all, Finished, Io, SshTarget};
use super::{DeviceArgs, DeviceError, RemoteRunArgs, SshArgs};
use crate::export::{json, markdown, write_new_file};
use crate::report::BenchReport;

/// How long a failed ssh waits for a Ctrl-C flag that may be on its way
/// ([`ssh::interrupted_within`]).
const INTERRUPT_GRACE: Duration = Duration::from_millis(500);

pub const DEVICE_GROUP_SCHEMA: &str = "edgebench/device-group/v1";
pub const DEVICE_REPORT_SCHEMA: &str = "edgebench/device-report/v1";

/// One finished group as saved under `--out` (`<group>.json`): the remote
/// `edgebench run` report plus what the board said about itself just before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceGroupResult {
    pub schema: String,
    pub board: String,
    /// Host name and port, without the user name.
    pub host: String,
    pub target: String,
    pub group: String,
    pub models: Vec<String>,
    /// The `--remote-runner` prefix, if any (qemu-arm under tests).
    pub remote_runner: Option<String>,
    pub facts: DeviceFacts,
    pub report: BenchReport,
}

/// All groups of one board: `device-report.json`. `report` merges the groups'
/// reports into one `edgebench/report/v1` (also written alone as `report.json`, which
/// `edgebench compare` reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceReport {
    pub schema: String,
    pub board: String,
    pub host: String,
    pub target: String,
    pub remote_runner: Option<String>,
    pub groups: Vec<GroupFacts>,
    pub report: BenchReport,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupFacts {
    pub group: String,
    pub models: Vec<String>,
    pub facts: DeviceFacts,
}

/// Everything one board's run needs, for `device` and for each board of a fleet.
#[derive(Debug, Clone)]
pub(crate) struct BoardJob {
    pub board: String,
    pub ssh: SshTarget,
    pub target: String,
    pub remote_runner: Option<String>,
    pub remote_tmp: Option<String>,
    pub groups: Vec<ModelGroup>,
    /// Options for the remote `edgebench run` after the ones we set.
    pub run_args: Vec<String>,
    pub out: PathBuf,
    pub command_timeout: Duration,
    pub resume: bool,
}

/// What `--out` already holds for a job.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub done: Vec<DeviceGroupResult>,
    pub pending: Vec<ModelGroup>,
    /// A complete report from an earlier run (resume with nothing left to do).
    pub existing_report: Option<PathBuf>,
}

pub(crate) type Say<'a> = &'a (dyn Fn(&str) + Sync);

fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn local_err(path: &Path, e: impl std::fmt::Display) -> DeviceError {
    DeviceError::Local {
        path: path.to_path_buf(),
        cause: e.to_string(),
    }
}

pub(crate) fn ssh_target(destination: &str, args: &SshArgs) -> Result<SshTarget, DeviceError> {
    let target = SshTarget {
        destination: destination.to_string(),
        port: args.port,
        identity: args.identity.clone(),
        options: args.ssh_options.clone(),
        connect_timeout: args.connect_timeout(),
        accept_new_host_key: args.accept_new_host_key,
    };
    target.validate()?;
    Ok(target)
}

/// The measurement options passed through to the remote `edgebench run`.
pub(crate) fn passthrough_args(run: &RemoteRunArgs) -> Vec<String> {
    let mut words = Vec::new();
    for (flag, value) in [
        ("--min-runs", &run.min_runs),
        ("--min-time", &run.min_time),
        ("--max-time", &run.max_time),
        ("--warmup-runs", &run.warmup_runs),
        ("--warmup-time", &run.warmup_time),
    ] {
        if let Some(v) = value {
            words.push(flag.to_string());
            words.push(v.clone());
        }
    }
    words.extend(run.run_args.iter().cloned());
    words
}

pub(crate) fn group_path(out: &Path, group: &ModelGroup) -> PathBuf {
    out.join(format!("{}.json", group.key))
}

/// Reads what `--out` holds. Without `--resume`, any earlier result there is an error
/// (results are never overwritten); with it, finished groups are kept if they match.
pub(crate) fn prepare_out(job: &BoardJob) -> Result<Prepared, DeviceError> {
    std::fs::create_dir_all(&job.out).map_err(|e| local_err(&job.out, e))?;
    let mut done = Vec::new();
    let mut pending = Vec::new();
    for group in &job.groups {
        let path = group_path(&job.out, group);
        if !path.exists() {
            pending.push(group.clone());
            continue;
        }
        if !job.resume {
            return Err(DeviceError::Usage(format!(
                "{}: already exists; pass --resume to run only what is missing, or choose another --out",
                path.display()
            )));
        }
        let bad = |problem: String| DeviceError::Usage(format!("{}: {problem}", path.display()));
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let result: DeviceGroupResult = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a {DEVICE_GROUP_SCHEMA} file: {e}")))?;
        if result.schema != DEVICE_GROUP_SCHEMA {
            return Err(bad(format!(
                "schema '{}' is not {DEVICE_GROUP_SCHEMA}",
                result.schema
            )));
        }
        if result.models != group.model_names() || result.target != job.target {
            return Err(bad(format!(
                "holds {} on {}, not {} on {}; use another --out",
                result.models.join(","),
                result.target,
                group.model_names().join(","),
                job.target
            )));
        }
        done.push(result);
    }
    let report_path = job.out.join("device-report.json");
    let existing_report = report_path.exists().then_some(report_path);
    if existing_report.is_some() && !job.resume {
        return Err(DeviceError::Usage(format!(
            "{}: already exists; pass --resume or choose another --out",
            job.out.join("device-report.json").display()
        )));
    }
    Ok(Prepared {
        done,
        pending,
        existing_report,
    })
}

/// `cargo build --release --target <triple> -p bench-harness --bin edgebench`, and
/// the path of the binary it produced (from cargo's JSON messages, so that
/// CARGO_TARGET_DIR and friends are honoured).
pub(crate) fn build_binary(triple: &str) -> Result<PathBuf, DeviceError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("edgebench: building edgebench for {triple} (cargo build --release)");
    let output = std::process::Command::new(&cargo)
        .args(["build", "--release", "--target", triple])
        .args(["-p", "bench-harness", "--bin", "edgebench"])
        .arg("--message-format=json-render-diagnostics")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| DeviceError::Spawn {
            program: "cargo".into(),
            cause: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(DeviceError::Build(format!(
            "cargo build for {triple} failed; fix the build or pass --binary PATH"
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "edgebench")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| {
            DeviceError::Build(format!(
                "cargo build for {triple} produced no edgebench binary"
            ))
        })
}

/// Runs one ssh command and turns its failures into one-line errors.
struct Remote<'a> {
    job: &'a BoardJob,
}

#[derive(Clone, Copy, PartialEq)]
enum Stage {
    /// The first command: an ssh failure means the board cannot be reached.
    FirstContact,
    Normal,
    /// Clean-up: runs even after Ctrl-C.
    CleanUp,
}

impl Remote<'_> {
    fn call(
        &self,
        what: &str,
        command: &str,
        io: Io<'_>,
        timeout: Duration,
        stage: Stage,
    ) -> Result<Finished, DeviceError> {
        let host = self.job.ssh.host_label();
        let cmd = self.job.ssh.command(command);
        let ignore_interrupt = stage == Stage::CleanUp;
        let finished = match ssh::run(cmd, io, timeout, what, ignore_interrupt) {
            Ok(f) => f,
            Err(DeviceError::Timeout { .. }) if stage == Stage::FirstContact => {
                return Err(DeviceError::Unreachable {
                    host,
                    secs: self.job.ssh.connect_timeout.as_secs(),
                    cause: "no answer".into(),
                })
            }
            Err(DeviceError::Timeout { what, secs }) => {
                return Err(DeviceError::Timeout {
                    what: format!("{what} on {host}"),
                    secs,
                })
            }
            Err(e) => return Err(e),
        };
        if finished.success() {
            return Ok(finished);
        }
        if !ignore_interrupt
            && (ssh::interrupted()
                || (finished.ssh_failed_or_killed() && ssh::interrupted_within(INTERRUPT_GRACE)))
        {
            return Err(DeviceError::Interrupted);
        }
        if finished.ssh_failed() {
            let cause = format!("ssh: {}", finished.cause());
            return Err(if finished.host_key_problem() {
                DeviceError::HostKey { host, cause }
            } else if stage == Stage::FirstContact {
                DeviceError::Unreachable {
                    host,
                    secs: self.job.ssh.connect_timeout.as_secs(),
                    cause,
                }
            } else {
                DeviceError::ConnectionLost {
                    host,
                    what: what.to_string(),
                    cause,
                }
            });
        }
        Err(DeviceError::RemoteFailed {
            host,
            what: what.to_string(),
            code: finished.status.code().unwrap_or(-1),
            cause: finished.cause(),
        })
    }
}

/// The remote work directory; removed by [`RemoteDir::remove`] or, failing that, on drop.
struct RemoteDir<'a> {
    remote: &'a Remote<'a>,
    path: String,
    removed: bool,
    say: Say<'a>,
}

impl RemoteDir<'_> {
    fn join(&self, rel: &str) -> String {
        format!("{}/{rel}", self.path)
    }

    fn remove(&mut self) -> Result<(), DeviceError> {
        self.removed = true;
        // The benchmark runs in its own session (sshd calls setsid), and the run
        // script records that session's process group: killing the group also
        // stops a benchmark whose connection died or whose command timed out.
        let q = quote(&self.path)?;
        let pgid = quote(&self.join("run.pgid"))?;
        let command = format!(
            "pg=$(cat {pgid} 2>/dev/null) && [ -n \"$pg\" ] && kill -TERM -- -\"$pg\" 2>/dev/null; rm -rf -- {q}"
        );
        let timeout = self.remote.job.ssh.connect_timeout + Duration::from_secs(60);
        self.remote.call(
            "removing the remote work directory",
            &command,
            Io::Capture,
            timeout,
            Stage::CleanUp,
        )?;
        (self.say)(&format!("removed remote {}", self.path));
        Ok(())
    }
}

impl Drop for RemoteDir<'_> {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = self.remove() {
                (self.say)(&format!(
                    "warning: could not remove remote directory {} ({e}); remove it by hand",
                    self.path
                ));
            }
        }
    }
}

/// Deploys, verifies and runs every pending group; each group's result is written to
/// `--out` as soon as it is fetched. The remote directory is removed in every case.
pub(crate) fn run_pending(
    job: &BoardJob,
    binary: &Path,
    pending: &[ModelGroup],
    say: Say<'_>,
) -> Result<Vec<DeviceGroupResult>, DeviceError> {
    let remote = Remote { job };
    let template = match &job.remote_tmp {
        Some(parent) => quote(&format!("{parent}/edgebench.XXXXXX"))?,
        None => "\"${TMPDIR:-/tmp}/edgebench.XXXXXX\"".to_string(),
    };
    let mkdir = format!(
        "d=$(mktemp -d {template}) && mkdir \"$d/models\" \"$d/results\" && printf '%s\\n' \"$d\""
    );
    let made = remote.call(
        "creating the remote work directory",
        &mkdir,
        Io::Capture,
        job.ssh.connect_timeout + Duration::from_secs(5),
        Stage::FirstContact,
    )?;
    let path = String::from_utf8_lossy(&made.stdout)
        .trim_end_matches('\n')
        .to_string();
    if !path.starts_with('/') || !path.contains("/edgebench.") || path.contains('\n') {
        return Err(DeviceError::RemoteFailed {
            host: job.ssh.host_label(),
            what: "mktemp -d".into(),
            code: 0,
            cause: format!("unexpected directory name {path:?}"),
        });
    }
    let mut dir = RemoteDir {
        remote: &remote,
        path,
        removed: false,
        say,
    };
    say(&format!("remote work directory {}", dir.path));
    let results = deploy_and_run(&remote, &dir, binary, pending, say);
    let removed = dir.remove();
    match (results, removed) {
        (Ok(r), Ok(())) => Ok(r),
        (Ok(r), Err(e)) => {
            say(&format!(
                "warning: could not remove remote directory {} ({e}); remove it by hand",
                dir.path
            ));
            Ok(r)
        }
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(cleanup)) => {
            say(&format!(
                "warning: could not remove remote directory {} ({cleanup}); remove it by hand",
                dir.path
            ));
            Err(e)
        }
    }
}

fn deploy_and_run(
    remote: &Remote<'_>,
    dir: &RemoteDir<'_>,
    binary: &Path,
    pending: &[ModelGroup],
    say: Say<'_>,
) -> Result<Vec<DeviceGroupResult>, DeviceError> {
    let job = remote.job;
    let timeout = job.command_timeout;
    let short_timeout = job.ssh.connect_timeout + Duration::from_secs(60);

    // Deploy: the binary and each model once, streamed through `cat` (no scp/sftp
    // path parsing: the remote name is one quoted shell word).
    let mut files: Vec<(PathBuf, String, String)> = vec![(
        binary.to_path_buf(),
        dir.join("edgebench"),
        sha256_file(binary)?,
    )];
    for group in pending {
        for m in &group.models {
            let remote_path = dir.join(&remote_model_path(&m.name));
            if !files.iter().any(|(_, r, _)| *r == remote_path) {
                files.push((m.path.clone(), remote_path, m.sha256.clone()));
            }
        }
    }
    let bytes: u64 = files
        .iter()
        .filter_map(|(p, _, _)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    say(&format!(
        "deploying edgebench and {} model file(s), {:.1} MB",
        files.len() - 1,
        bytes as f64 / 1e6
    ));
    for (local, remote_path, _) in &files {
        let what = format!("copying {}", local.display());
        remote.call(
            &what,
            &format!("cat > {}", quote(remote_path)?),
            Io::Upload(local),
            timeout,
            Stage::Normal,
        )?;
    }
    remote.call(
        "chmod",
        &format!("chmod 755 {}", quote(&dir.join("edgebench"))?),
        Io::Capture,
        short_timeout,
        Stage::Normal,
    )?;

    // Verify every copy on the device; `sha256sum < file` prints "<hex>  -", so odd
    // file names cannot confuse the parsing.
    let verify = files
        .iter()
        .map(|(_, r, _)| Ok(format!("sha256sum < {}", quote(r)?)))
        .collect::<Result<Vec<_>, DeviceError>>()?
        .join(" && ");
    let sums = remote.call("sha256sum", &verify, Io::Capture, timeout, Stage::Normal)?;
    let sums = String::from_utf8_lossy(&sums.stdout);
    let mut lines = sums.lines();
    for (local, remote_path, sha) in &files {
        let got = lines
            .next()
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("")
            .to_ascii_lowercase();
        if got != *sha {
            return Err(DeviceError::Verify {
                file: format!("{} (as {remote_path})", local.display()),
                local: sha.clone(),
                remote: if got.is_empty() {
                    "missing".into()
                } else {
                    got
                },
            });
        }
    }
    say(&format!(
        "verified sha256 of {} file(s) on the device",
        files.len()
    ));

    let mut results = Vec::new();
    for group in pending {
        results.push(run_group(remote, dir, group, say)?);
    }
    Ok(results)
}

/// Where a model goes in the remote work directory (relative to it).
fn remote_model_path(name: &str) -> String {
    format!("models/{name}.onnx")
}

fn run_group(
    remote: &Remote<'_>,
    dir: &RemoteDir<'_>,
    group: &ModelGroup,
    say: Say<'_>,
) -> Result<DeviceGroupResult, DeviceError> {
    let job = remote.job;
    let short_timeout = job.ssh.connect_timeout + Duration::from_secs(60);
    let facts_out = remote.call(
        "reading device facts",
        &facts_command(),
        Io::Capture,
        short_timeout,
        Stage::Normal,
    )?;
    let facts = parse_facts(&String::from_utf8_lossy(&facts_out.stdout), now_unix_s());
    say(&format!(
        "{}: {} (load before: {})",
        group.key,
        group.model_names().join(", "),
        facts.loadavg_before.as_deref().unwrap_or("unknown")
    ));

    let report_rel = format!("results/{}.json", group.key);
    let mut words: Vec<String> = vec![
        "./edgebench".into(),
        "run".into(),
        "--target".into(),
        job.target.clone(),
        "--no-export".into(),
        "--progress-lines".into(),
        "--json".into(),
        report_rel.clone(),
    ];
    // Every model as a file, by the name it was deployed under: zoo models keep their
    // identity by name on the remote side, and no name has to survive a comma list.
    for m in &group.models {
        words.push("--model-file".into());
        words.push(remote_model_path(&m.name));
    }
    words.extend(job.run_args.iter().cloned());
    let runner = job
        .remote_runner
        .as_deref()
        .map(|r| format!("{r} "))
        .unwrap_or_default();
    let pgid = quote(&dir.join("run.pgid"))?;
    // `$$` is the remote shell, a session and process-group leader (sshd calls
    // setsid); clean-up kills that group if this command is cut off.
    let script = format!(
        "cd {} && echo $$ > {pgid} && {runner}{}; rc=$?; rm -f {pgid}; exit $rc",
        quote(&dir.path)?,
        quote_all(&words)?
    );
    let what = format!("benchmark {}", group.key);
    let stream = |line: &str| say(&format!("  {line}"));
    remote.call(
        &what,
        &script,
        Io::Stream(&stream),
        job.command_timeout,
        Stage::Normal,
    )?;

    // Fetch into a temp file beside the result, check it, then publish it atomically.
    let tmp = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempfile_in(&job.out)
        .map_err(|e| local_err(&job.out, e))?;
    remote.call(
        &format!("fetching the {} report", group.key),
        &format!("cat {}", quote(&dir.join(&report_rel))?),
        Io::Download(tmp.path()),
        job.command_timeout,
        Stage::Normal,
    )?;
    let report = json::read_json(tmp.path()).map_err(|e| DeviceError::RemoteFailed {
        host: job.ssh.host_label(),
        what: format!("the {} report", group.key),
        code: 0,
        cause: e.to_string(),
    })?;
    let result = DeviceGroupResult {
        schema: DEVICE_GROUP_SCHEMA.into(),
        board: job.board.clone(),
        host: job.ssh.host_label(),
        target: job.target.clone(),
        group: group.key.clone(),
        models: group.model_names(),
        remote_runner: job.remote_runner.clone(),
        facts,
        report,
    };
    let path = group_path(&job.out, group);
    let mut text = serde_json::to_string_pretty(&result).expect("results serialize");
    text.push('\n');
    write_new_file(&path, text.as_bytes())?;
    say(&format!("saved {}", path.display()));
    Ok(result)
}

/// One `edgebench/report/v1` from the groups' reports, in group order.
pub fn merge_reports(parts: &[&BenchReport]) -> Option<BenchReport> {
    let (first, rest) = parts.split_first()?;
    let mut merged = (*first).clone();
    for part in rest {
        merged.started_unix_s = merged.started_unix_s.min(part.started_unix_s);
        merged.models.extend(part.models.iter().cloned());
        merged.claims.extend(part.claims.iter().cloned());
        merged.warnings.extend(part.warnings.iter().cloned());
        merged
            .options
            .models
            .extend(part.options.models.iter().cloned());
        merged.peak_rss_kib = match (merged.peak_rss_kib, part.peak_rss_kib) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    Some(merged)
}

/// Writes `device-report.json`, `report.json` and `report.md` (with a numeric suffix
/// when an earlier complete report is there: nothing is overwritten).
pub(crate) fn write_board_report(
    job: &BoardJob,
    groups: &[DeviceGroupResult],
) -> Result<(DeviceReport, PathBuf), DeviceError> {
    let parts: Vec<&BenchReport> = groups.iter().map(|g| &g.report).collect();
    let merged =
        merge_reports(&parts).ok_or_else(|| DeviceError::Usage("no model selected".into()))?;
    let report = DeviceReport {
        schema: DEVICE_REPORT_SCHEMA.into(),
        board: job.board.clone(),
        host: job.ssh.host_label(),
        target: job.target.clone(),
        remote_runner: job.remote_runner.clone(),
        groups: groups
            .iter()
            .map(|g| GroupFacts {
                group: g.group.clone(),
                models: g.models.clone(),
                facts: g.facts.clone(),
            })
            .collect(),
        report: merged,
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
            ["device-report", "report"]
                .iter()
                .all(|stem| !job.out.join(format!("{stem}{s}.json")).exists())
                && !job.out.join(format!("report{s}.md")).exists()
        })
        .expect("some suffix is free");
    let device_path = job.out.join(format!("device-report{suffix}.json"));
    let mut text = serde_json::to_string_pretty(&report).expect("reports serialize");
    text.push('\n');
    write_new_file(&device_path, text.as_bytes())?;
    json::write_json(
        &report.report,
        &job.out.join(format!("report{suffix}.json")),
    )?;
    markdown::write_markdown(&report.report, &job.out.join(format!("report{suffix}.md")))?;
    Ok((report, device_path))
}

/// Prepares, runs what is missing and writes the board's report.
pub(crate) fn run_board(
    job: &BoardJob,
    prepared: Prepared,
    binary: Option<&Path>,
    say: Say<'_>,
) -> Result<(DeviceReport, PathBuf), DeviceError> {
    let Prepared {
        mut done,
        pending,
        existing_report,
    } = prepared;
    if pending.is_empty() {
        if let Some(path) = existing_report {
            say(&format!(
                "nothing to do: every group is in {}",
                path.display()
            ));
            let text = std::fs::read_to_string(&path).map_err(|e| local_err(&path, e))?;
            let report: DeviceReport = serde_json::from_str(&text)
                .map_err(|e| DeviceError::Usage(format!("{}: {e}", path.display())))?;
            return Ok((report, path));
        }
    } else {
        for g in &done {
            say(&format!(
                "{}: already done ({}), skipped",
                g.group,
                g.models.join(", ")
            ));
        }
        let binary = binary.expect("a binary when groups are pending");
        let total = job.groups.len();
        let before = done.len();
        let fresh = run_pending(job, binary, &pending, say).map_err(|cause| {
            let finished = before
                + pending
                    .iter()
                    .filter(|g| group_path(&job.out, g).exists())
                    .count();
            DeviceError::Incomplete {
                cause: Box::new(cause),
                done: finished,
                total,
                out: job.out.clone(),
            }
        })?;
        done.extend(fresh);
    }
    // Report in the planned group order, whatever order they finished in.
    done.sort_by_key(|g| job.groups.iter().position(|p| p.key == g.group));
    write_board_report(job, &done)
}

pub(crate) fn device_main(args: &DeviceArgs) -> Result<(), DeviceError> {
    let profile = Profile::by_name(&args.target).map_err(|e| DeviceError::Usage(e.to_string()))?;
    let ssh = ssh_target(&args.host, &args.ssh)?;
    let board = file_safe(&args.name.clone().unwrap_or_else(|| {
        let label = ssh.host_label();
        label.replace(':', "-")
    }));
    if let Some(b) = &args.run.binary {
        if !b.is_file() {
            return Err(DeviceError::Usage(format!(
                "{}: --binary: no such file",
                b.display()
            )));
        }
    }
    let groups = plan_groups(&args.run)?;
    let job = BoardJob {
        out: args
            .run
            .out
            .clone()
            .unwrap_or_else(|| Path::new("results/device").join(&board)),
        board,
        ssh,
        target: profile.name.clone(),
        remote_runner: args
            .run
            .remote_runner
            .clone()
            .filter(|r| !r.trim().is_empty()),
        remote_tmp: args.run.remote_tmp.clone(),
        groups,
        run_args: passthrough_args(&args.run),
        command_timeout: args.ssh.command_timeout(),
        resume: args.run.resume,
    };
    let prepared = prepare_out(&job)?;
    let binary = if prepared.pending.is_empty() {
        None
    } else {
        Some(match &args.run.binary {
            Some(b) => b.clone(),
            None => build_binary(profile.resolved_triple())?,
        })
    };
    let label = job.board.clone();
    let say = move |line: &str| println!("[{label}] {line}");
    let (report, path) = run_board(&job, prepared, binary.as_deref(), &say)?;
    println!("{}", crate::output::table::terminal_summary(&report.report));
    println!("[{}] report: {}", job.board, path.display());
    Ok(())
}
